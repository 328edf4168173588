"""The lookahead window W (PREFETCH_WINDOW, written by a madvise(MADV_KV_
PREFETCH) hint before its STEP doorbell; docs/device-model.md): what it
changes in the model, shown on one decode loop for several W."""

from __future__ import annotations

from modelkit import CheckedModel, MiB, prefetch, small_config, step

from kvcpu_dev.device import regs
from kvcpu_dev.model.config import T1

BLOCKS = 24
GAP = 4  # block k is needed at step 4 + GAP * k
FIRST = 4


def madvise_prefetch(m, t, w):
    """madvise(addr, (W << 32) | t, MADV_KV_PREFETCH) as the device sees it."""
    m.mmio_write(regs.PREFETCH_WINDOW, w)
    m.mmio_write(regs.STEP_ADVANCE, t)
    m.run_pending()


def decode_loop(window):
    """A runtime at step 0 names the step each of 24 blocks (in T2) is
    needed at, one every 4 steps, then decodes a step at a time, passing W
    with each step as the RFC's PREFETCH does.  A T2 -> T1 transfer takes 2
    steps (2 ms on the sim clock); T1 holds 4 blocks.  Returns the model's
    counters and the most T1 ever held or had coming."""
    m = CheckedModel(small_config(initial_tier=2, t1_capacity=4 * MiB, t2_bandwidth=2**29,
                                  hot_protect_steps=0))
    madvise_prefetch(m, 0, window)
    for k in range(BLOCKS):
        prefetch(m, k * MiB, MiB, FIRST + GAP * k)
    peak = 0
    for t in range(1, FIRST + GAP * BLOCKS + 2):
        madvise_prefetch(m, t, window)
        peak = max(peak, m.dma.resident[T1] + m.dma.inbound[T1])
    return m.counts, peak


def test_no_window_stages_at_the_hint_and_fills_t1():
    """W = 0 (no madvise, or W 0): today's behaviour, every PREFETCH stages
    at its hint: T1 fills with blocks needed up to 12 steps later."""
    c, peak = decode_loop(0)
    assert c["prefetch_issued_hint"] == 4 and c["prefetch_held_window"] == 0
    assert peak == 4  # T1 full
    assert (c["prefetch_on_time"], c["prefetch_late"]) == (BLOCKS, 0)


def test_a_window_stages_just_in_time_with_half_the_t1():
    """W = 4: each block is staged at the STEP its target comes within 4
    steps: all on time, T1 never holds more than 2."""
    c, peak = decode_loop(4)
    assert c["prefetch_held_window"] >= BLOCKS - 1 and c["prefetch_issued_window"] >= BLOCKS - 1
    assert c["prefetch_issued_scan"] == 0
    assert peak == 2
    assert (c["prefetch_on_time"], c["prefetch_late"]) == (BLOCKS, 0)


def test_a_window_shorter_than_a_transfer_makes_every_prefetch_late():
    """W = 1 step, but a transfer takes 2: staged too late, every one."""
    c, _ = decode_loop(1)
    assert (c["prefetch_on_time"], c["prefetch_late"]) == (0, BLOCKS)


def test_the_window_is_latched_and_shown():
    m = CheckedModel(small_config())
    madvise_prefetch(m, 42, 16)
    s = m.stats()
    assert (s["prefetch_window"], s["current_step"], s["steps"]) == (16, 42, 1)
    madvise_prefetch(m, 43, 0)
    assert m.stats()["prefetch_window"] == 0


def test_armed_blocks_are_released_when_the_window_goes_back_to_zero():
    m = CheckedModel(small_config(initial_tier=2))
    madvise_prefetch(m, 0, 2)
    prefetch(m, 0, 2 * MiB, 50)
    assert m.counts["prefetch_held_window"] == 2 and m.counts["prefetch_issued_hint"] == 0
    assert m.coalesce_limit() == 48  # a run of plain STEPs stops where the window opens
    madvise_prefetch(m, 1, 0)  # no window any more: staged at once
    assert m.counts["prefetch_issued_window"] == 2
    step(m, 2)
    assert m.coalesce_limit() == 50
