"""The block directory's tag store, and what the model does when it is full."""

from __future__ import annotations

import pytest
from modelkit import CheckedModel, MiB, evict, hot, prefetch, share, small_config


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
