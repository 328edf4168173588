"""The vectorized scan against the per-entry reference, and the model's
invariants under random operation sequences (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkit import CheckedModel, MiB, evict, hot, prefetch, set_weights, share, small_config, step

from kvcpu_dev.model import DeviceModel, hepc, reference
from kvcpu_dev.model.hepc import Weights
from kvcpu_dev.model.rtbd import Directory

U32 = 2**32 - 1
steps = st.one_of(st.integers(0, 600), st.integers(U32 - 600, U32), st.integers(0, U32))
weights = st.builds(
    Weights,
    *[st.one_of(st.integers(0, 255), st.sampled_from([0, 1, 2, 200, 255]))] * 4,
    st.one_of(st.integers(0, 2000), st.integers(0, 0xFFFF), st.sampled_from([0, 0x1000, 0xFFFF])),
    st.one_of(st.integers(0, 2000), st.integers(0, 0xFFFF), st.sampled_from([0, 0xE000, 0xFFFF])),
)
rooms = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 40)), min_size=4, max_size=4)
entries = st.builds(
    reference.Entry,
    live=st.booleans(), tier=st.integers(0, 3), r=st.integers(0, 255), f=st.integers(0, 255),
    last_access=steps, ref=st.sampled_from([0, 0, 1, 2, 255]), prefix=st.booleans(),
    hot=st.booleans(), hot_step=steps, armed=st.booleans(), target=steps, moving=st.booleans(),
)


def directory_of(items: list[reference.Entry]) -> Directory:
    d = Directory(len(items))
    for name in ("live", "tier", "r", "f", "last_access", "ref", "prefix", "hot", "hot_step", "armed", "target"):
        getattr(d, name)[:] = [getattr(e, name) for e in items]
    d.mv_dst[:] = [e.tier + 1 if e.moving else -1 for e in items]
    d.high_water = d.size  # built by hand: no allocation history to bound it
    return d


def assert_same(res: hepc.ScanResult, ref: reference.Decision) -> None:
    assert res.priority.tolist() == ref.priority
    assert res.demote.tolist() == ref.demote
    assert res.stage.tolist() == ref.stage
    for name in ("live", "candidates", "protected_ref", "protected_hot", "protected_prefetch", "at_floor",
                 "busy", "demote_deferred", "stage_wanted", "stage_deferred"):
        assert getattr(res, name) == getattr(ref, name), name


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(entries, min_size=1, max_size=40),
    step32=steps,
    w=weights,
    hot_steps=st.integers(0, 8),
    room=rooms,
)
def test_vectorized_scan_matches_reference(items, step32, w, hot_steps, room):
    d = directory_of(items)
    assert_same(hepc.scan(d, step32, w, hot_steps, room), reference.decide(items, step32, w, hot_steps, room))


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(entries, min_size=1, max_size=40),
    step32=steps,
    w=weights,
    hot_steps=st.integers(0, 8),
    room=rooms,
    window=st.one_of(st.integers(0, 8), st.integers(0, 600), st.integers(0, U32)),
)
def test_vectorized_scan_matches_reference_with_a_lookahead_window(items, step32, w, hot_steps, room, window):
    """PREFETCH_WINDOW: a target asks for a stage only within the window."""
    d = directory_of(items)
    assert_same(hepc.scan(d, step32, w, hot_steps, room, window),
                reference.decide(items, step32, w, hot_steps, room, window))


@settings(max_examples=150, deadline=None)
@given(items=st.lists(entries, min_size=1, max_size=40), dead_tail=st.integers(1, 40),
       step32=steps, w=weights, hot_steps=st.integers(0, 8), room=rooms)
def test_scanning_below_the_high_water_mark_decides_the_same(items, dead_tail, step32, w, hot_steps, room):
    """The device scans only entries below the high-water mark; with dead
    entries above it, that must decide exactly what a full scan does."""
    tail = [reference.Entry(live=False)] * dead_tail
    full = reference.decide(items + tail, step32, w, hot_steps, room)
    d = directory_of(items + tail)
    d.high_water = len(items)
    res = hepc.scan(d, step32, w, hot_steps, room)
    assert res.priority.tolist() == full.priority[: len(items)]
    assert res.demote.tolist() == full.demote
    assert res.stage.tolist() == full.stage
    assert res.live == full.live and res.candidates == full.candidates


def test_the_sum_wraps_at_16_bits():
    e = reference.Entry(r=255, f=255, last_access=7, prefix=True)
    w = Weights(255, 255, 255, 255, 0, 0)
    expected = (255 * 255 * 4) % 2**16  # 260100 mod 65536 = 63492
    assert reference.score(e, 7, w) == expected == 63492
    assert hepc.scan(directory_of([e]), 7, w, 0, [0] * 4).priority.tolist() == [expected]


def test_staging_into_a_full_t1_prefers_targeted_blocks():
    items = [reference.Entry(tier=2, armed=True, target=10), reference.Entry(tier=3, r=255)]
    w = Weights(1, 1, 2, 200, 0, 100)  # only the second scores above 100
    res = hepc.scan(directory_of(items), 5, w, 0, [0, 1, 0, 0])
    assert res.stage.tolist() == reference.decide(items, 5, w, 0, [0, 1, 0, 0]).stage == [0]
    assert (res.stage_wanted, res.stage_deferred) == (2, 1)


def test_default_weights_never_score_a_non_prefix_block_above_1020():
    items = [reference.Entry(r=255, f=255, last_access=5)]
    res = hepc.scan(directory_of(items), 5, Weights(), 0, [1] * 4)
    assert res.priority.tolist() == [1020] and res.candidates == 1


# -- random operation sequences on the whole model --------------------------------------------
ops = st.one_of(
    st.tuples(st.sampled_from(["hot", "evict", "share"]), st.integers(0, 40), st.integers(0, 3 * MiB)),
    st.tuples(st.just("prefetch"), st.integers(0, 40), st.integers(0, 3 * MiB), st.integers(0, 30)),
    st.tuples(st.just("step"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("weights"), st.integers(0, 300), st.integers(0, 0x11000), st.integers(0, 0x11000)),
    st.tuples(st.just("run")),
)


def apply(m, op):
    kind = op[0]
    if kind in ("hot", "evict", "share"):
        {"hot": hot, "evict": evict, "share": share}[kind](m, op[1] * MiB // 2, op[2])
    elif kind == "prefetch":
        prefetch(m, op[1] * MiB // 2, op[2], op[3])
    elif kind == "step":
        step(m, op[1], run=op[2])
    elif kind == "weights":
        set_weights(m, op[1], 1, 2, op[1], op[2], op[3])
    else:
        scan_against_reference(m)


def scan_against_reference(m):
    """Run the pending scan and check its decisions against the reference,
    on the state the scan saw (DMA settled first)."""
    m._settle()
    pending = m._pending
    if pending is None:
        m.run_pending()
        return
    items = reference.entries_from_directory(m.dir)
    ref = reference.decide(items, pending[0], pending[1], m.config.hot_protect_steps, m.dma.room())
    idle_before = m.dir.mv_dst == -1
    m.run_pending()
    queued = np.flatnonzero(idle_before & (m.dir.mv_dst != -1)).tolist()
    assert queued == sorted(ref.demote + ref.stage)
    assert m.last_scan["evict_candidates"] == ref.candidates
    assert m.last_scan["protected_ref"] == ref.protected_ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(ops, max_size=60), config=st.sampled_from([
    dict(entries=16, hot_protect_steps=1),
    dict(entries=64, hbm_capacity=4 * MiB, t1_capacity=3 * MiB, t2_capacity=6 * MiB, t3_capacity=MiB * 100),
    dict(entries=8, initial_tier=2, t2_bandwidth=2**29),
]))
def test_invariants_hold_after_every_operation(program, config):
    m = CheckedModel(small_config(**config))  # checks after every register write and scan
    for op in program:
        apply(m, op)
    m.run_pending()
    s = m.stats()
    assert s["bytes_moved"] == s["bytes_down"] + s["bytes_up"]


# -- the reference scorer's guard: a referenced prefix block is decided nothing ---------------
def test_a_referenced_prefix_block_is_not_staged_by_its_score():
    w = Weights(1, 1, 2, 200, 0, 100)  # every prefix block scores far above 100
    items = [reference.Entry(tier=2, prefix=True, ref=1),  # guarded: nothing this step
             reference.Entry(tier=2, prefix=True, ref=0),  # no reference left: the score stages it
             reference.Entry(tier=3, prefix=True, ref=2, armed=True, target=9)]  # the runtime asked: staged
    res = hepc.scan(directory_of(items), 5, w, 0, [0, 8, 0, 0])
    ref = reference.decide(items, 5, w, 0, [0, 8, 0, 0])
    assert res.stage.tolist() == ref.stage == [1, 2]
    assert res.demote.tolist() == ref.demote == []


def test_the_device_stages_a_shared_prefix_only_once_its_last_reference_is_dropped():
    m = CheckedModel(small_config(initial_tier=2))  # the runtime allocated the block in T2
    set_weights(m, 1, 1, 2, 200, 0, 100)
    share(m, 0, MiB)
    step(m, 1)
    assert m.last_scan["stage_wanted"] == 0 and m.dir.tier[0] == 2
    evict(m, 0, MiB)  # the last reference dropped: the scorer decides again
    step(m, 2)
    assert m.last_scan["prefetch_issued"] == 1


# -- the DMA engine's two ways of completing transfers --------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(ops, max_size=60), few=st.sampled_from([1, 3]))
def test_transfers_completed_one_by_one_land_as_a_window_lands_them(program, few):
    """DmaEngine.advance_to completes the first few finished transfers one
    at a time (_complete_few) and the rest a numpy window at a time
    (_complete_window); the directory, the tallies and the queues must not
    tell which did it."""
    import unittest.mock

    from kvcpu_dev.model import dma

    def run(few_max):
        with unittest.mock.patch.object(dma, "_FEW", few_max):
            m = DeviceModel(small_config(entries=64, hbm_capacity=4 * MiB, t1_capacity=3 * MiB,
                                         t2_capacity=6 * MiB, t3_capacity=MiB * 100))
            for op in program:
                apply(m, op) if op[0] != "run" else m.run_pending()
            m.run_pending()
            d = m.dir
            stats = {k: v for k, v in m.stats().items() if "scan_ns" not in k}  # wall-clock durations
            return (stats, d.tier.tolist(), d.arrived_ns.tolist(), d.mv_dst.tolist(),
                    [(ch.head, ch.tail, ch.free_at, ch.completed) for ch in m.dma.channels])

    assert run(0) == run(few)  # 0: every transfer through the window
