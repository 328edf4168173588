"""The block directory's tag store, and what the model does when it is full."""

from __future__ import annotations

import random

import numpy as np
import pytest
from modelkit import CheckedModel, MiB, evict, hot, prefetch, share, small_config

from kvcpu_dev.model.rtbd import NO_MOVE, REQUEST_UNKNOWN, Directory

#: Each entry field's width: the hardware entry's where it documents one.
WIDTHS = {
    "live": np.bool_, "block": np.uint64, "hint_va": np.uint64, "hint_len": np.uint64,
    "tier": np.int8, "priority": np.uint16, "last_access": np.uint32, "r": np.uint8, "f": np.uint8,
    "ref": np.uint8, "prefix": np.bool_, "dirty": np.bool_, "request_id": np.uint16, "hot": np.bool_,
    "hot_step": np.uint32, "armed": np.bool_, "target": np.uint32, "arrived_ns": np.int64,
    "mv_dst": np.int8, "mv_chan": np.int8, "mv_pos": np.int64, "gen": np.uint32,
}


def test_one_array_per_field_at_the_directory_size():
    d = Directory(5)
    arrays = d.arrays()
    assert {name: a.dtype.type for name, a in arrays.items()} == WIDTHS
    assert all(a.shape == (5,) for a in arrays.values())
    assert d.nbytes() == 5 * sum(np.dtype(t).itemsize for t in WIDTHS.values())


def test_a_new_directory_is_all_free_with_no_move_outstanding():
    d = Directory(3)
    assert len(d) == 0 and sorted(d.free_list()) == [0, 1, 2] and d.high_water == 0
    assert d.mv_dst.tolist() == [NO_MOVE] * 3
    assert not d.live.any()


def test_entries_are_handed_out_from_0_and_a_freed_one_is_reused_first():
    d = Directory(4)
    assert [d.allocate(b, 0, 7, 0) for b in (10, 11, 12)] == [0, 1, 2]
    d.release(1)
    assert d.lookup(11) is None and d.live.tolist() == [True, False, True, False]
    assert d.allocate(13, 0, 7, 0) == 1
    assert d.high_water == 3  # the live entries stay below it
    assert d.gen.tolist() == [1, 2, 1, 0]  # entry 1 handed out twice


def test_a_reused_entry_starts_afresh():
    d = Directory(1)
    i = d.allocate(10, 2, 5, 100)
    d.r[i], d.f[i], d.ref[i], d.prefix[i], d.hot[i], d.armed[i], d.mv_dst[i] = 9, 9, 1, True, True, True, 3
    d.release(i)
    assert d.allocate(20, 1, 6, 200) == i
    assert (d.block[i], d.tier[i], d.last_access[i], d.arrived_ns[i]) == (20, 1, 6, 200)
    assert (d.r[i], d.f[i], d.ref[i], d.prefix[i], d.hot[i], d.armed[i]) == (0, 0, 0, False, False, False)
    assert d.dirty[i] and d.request_id[i] == REQUEST_UNKNOWN and d.mv_dst[i] == NO_MOVE


@pytest.mark.parametrize("hint", ["hot", "prefetch", "share"])
def test_on_a_full_directory_each_allocating_hint_counts_and_drops_the_new_blocks(hint):
    """docs/device-model.md, "Full directory": the block stays untracked,
    the hint does nothing for it and it counts in dir_full; the blocks
    already tracked still get the hint."""
    m = CheckedModel(small_config(entries=2))
    hot(m, 0, 2 * MiB)
    send = {"hot": lambda: hot(m, MiB, 3 * MiB), "share": lambda: share(m, MiB, 3 * MiB),
            "prefetch": lambda: prefetch(m, MiB, 3 * MiB, 9)}[hint]
    send()
    assert m.counts["dir_full"] == 2  # blocks 2 and 3
    rows = m.blocks()
    assert [r["va"] // MiB for r in rows] == [0, 1]
    assert m.counts["blocks_allocated"] == 2
    assert (rows[1]["f"], rows[1]["hint_va"]) == (2, MiB)  # block 1 got this hint too
    evict(m, 0, MiB)  # EVICT frees an entry; the next hint allocates again
    send()
    assert [r["va"] // MiB for r in m.blocks()] == [1, 2] and m.counts["dir_full"] == 2 + 1


def test_the_free_list_hands_out_entries_in_the_order_of_a_stack_of_every_index():
    """The free list keeps only released entries; a stack of every index
    (popped from the end) was its first statement, and it is the oracle."""
    rng = random.Random(7)
    for size in (1, 2, 5, 64):
        d, stack = Directory(size), list(range(size - 1, -1, -1))
        held: list[int] = []
        for n in range(400):
            if stack and (not held or rng.random() < 0.6):
                i = d.allocate(1000 + n, 0, 0, 0)
                assert i == stack.pop()
                held.append(i)
            else:
                i = held.pop(rng.randrange(len(held)))
                d.release(i)
                stack.append(i)
            assert d.free_entries() == len(stack) and d.free_list() == stack
            assert all(i < d.high_water for i in held)
    full = Directory(2)
    full.allocate(1, 0, 0, 0), full.allocate(2, 0, 0, 0)
    with pytest.raises(IndexError):
        full.allocate(3, 0, 0, 0)
