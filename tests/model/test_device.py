"""Behaviour of the device model driven through its BAR0 registers."""

from __future__ import annotations

import logging
import time
import tomllib

import pytest
from modelkit import CheckedModel, MiB, evict, hot, prefetch, set_weights, share, small_config, step

from kvcpu_dev.device import model_text, regs
from kvcpu_dev.model import DeviceModel, ModelConfig, views

FAST = dict(t2_bandwidth=2**40, t3_bandwidth=2**40)  # every move well inside a step


def tiers_of(m):
    return {b["va"] // MiB: b["tier"] for b in m.blocks()}


# -- the STEP doorbell ------------------------------------------------------------------
def test_step_doorbell_only_records_a_scan_and_a_later_step_supersedes_it(model):
    hot(model, 0, MiB)
    step(model, 1, run=False)
    assert model.has_pending() and model.counts["scans"] == 0
    step(model, 2, run=False)
    assert model.counts["scans_superseded"] == 1
    assert model.run_pending() is True
    assert not model.has_pending()
    assert model.counts["scans"] == 1 and model.last_scan["step"] == 2
    assert model.run_pending() is False


def test_pending_scan_uses_the_weights_latched_at_its_step(model):
    hot(model, 0, MiB)
    step(model, 1, run=False)
    set_weights(model, 1, 1, 2, 200, 0, 0xE000)  # nothing is below threshold 0
    model.run_pending()
    assert model.last_scan["evict_candidates"] == 1
    step(model, 2)
    assert model.last_scan["evict_candidates"] == 0


# -- mapping hints to blocks ---------------------------------------------------------------
def test_a_hint_touches_every_block_its_range_overlaps(model):
    hot(model, MiB // 2, MiB)  # half of block 0, half of block 1
    hot(model, 3 * MiB + 5, 1)
    rows = model.blocks()
    assert [r["va"] for r in rows] == [0, MiB, 3 * MiB]
    assert rows[0]["hint_va"] == MiB // 2 and rows[0]["hint_len"] == MiB
    assert rows[2]["hint_va"] == 3 * MiB + 5 and rows[2]["len"] == MiB


def test_a_zero_length_hint_changes_nothing_but_is_counted(model):
    hot(model, 0, 0)
    assert model.stats()["live_entries"] == 0 and model.counts["hints_zero_len"] == 1


def test_a_hint_reaching_past_the_top_of_the_address_space_is_clipped(model):
    hot(model, 2**64 - MiB // 2, MiB)
    assert [r["va"] for r in model.blocks()] == [2**64 - MiB]


def test_new_blocks_start_in_hbm_and_spill_below_when_it_is_full(model):
    hot(model, 0, 10 * MiB)  # HBM holds 8 blocks
    assert list(tiers_of(model).values()) == ["HBM"] * 8 + ["T1"] * 2
    assert model.counts["alloc_spilled"] == 2


def test_a_full_directory_leaves_new_blocks_untracked_and_counts_them():
    m = CheckedModel(small_config(entries=4))
    hot(m, 0, 6 * MiB)
    assert m.stats()["live_entries"] == 4 and m.counts["dir_full"] == 2
    hot(m, 0, 2**64 - 1)  # the whole address space: O(entries), not O(2^44)
    assert m.counts["dir_full"] == 2 + 2**44 - 4
    evict(m, 0, 2**64 - 1)
    assert m.stats()["live_entries"] == 0 and m.counts["blocks_reclaimed"] == 4


def test_hints_stop_allocating_when_every_tier_is_full():
    m = CheckedModel(small_config(hbm_capacity=MiB, t1_capacity=0, t2_capacity=0, t3_capacity=MiB))
    hot(m, 0, 3 * MiB)
    assert tiers_of(m) == {0: "HBM", 1: "T3"} and m.counts["alloc_no_room"] == 1


# -- HEPC with the documented defaults ---------------------------------------------------
def test_default_weights_send_every_unprotected_block_down_a_tier_each_step():
    m = CheckedModel(small_config(hot_protect_steps=0, **FAST))
    hot(m, 0, 4 * MiB)
    share(m, 8 * MiB, MiB)
    expected = {1: ("HBM", "T1"), 2: ("T1", "T2"), 3: ("T2", "T3"), 4: ("T3", None)}
    for n, (tier, moving) in expected.items():
        step(m, n)
        assert m.last_scan["evict_candidates"] == 4  # every non-prefix block, every step
        rows = {r["va"] // MiB: r for r in m.blocks()}
        assert {(rows[b]["tier"], rows[b]["moving"]) for b in range(4)} == {(tier, moving)}
        assert (rows[8]["tier"], rows[8]["moving"], rows[8]["prio"]) == ("HBM", None, 51000 + (255 >> (n - 1)) + 1 + 2 * (255 - n))
    assert m.last_scan["evict_at_floor"] == 4
    assert m.stats()["evictions_completed"] == 12


# -- what the hints do ------------------------------------------------------------------------
def test_a_referenced_prefix_is_never_demoted_until_its_last_reference_goes():
    m = CheckedModel(small_config(hot_protect_steps=0, **FAST))
    set_weights(m, 1, 1, 2, 0, 4096, 0xE000)  # w_d = 0: the prefix scores low
    share(m, 0, MiB)
    for n in range(1, 4):
        step(m, n)
        assert m.last_scan["protected_ref"] == 1 and m.last_scan["evictions_issued"] == 0
    evict(m, 0, MiB)  # drops the only reference, keeps the block
    assert m.blocks()[0]["ref"] == 0 and m.counts["ref_drops"] == 1
    step(m, 4)
    assert m.last_scan["evictions_issued"] == 1


def test_share_and_hot_call_off_a_queued_demotion():
    m = CheckedModel(small_config(hbm_capacity=0, hot_protect_steps=0))  # blocks start in T1
    hot(m, 0, 3 * MiB)
    step(m, 1)  # three T1 -> T2 demotions queued, ~0.98 ms each
    share(m, 2 * MiB, MiB)
    hot(m, MiB, MiB)
    assert m.counts["demotions_cancelled"] == 2
    rows = m.blocks()
    assert [(r["tier"], r["moving"]) for r in rows] == [("T1", "T2"), ("T1", None), ("T1", None)]


def test_evict_reclaims_an_unshared_block_at_once():
    m = CheckedModel(small_config())
    hot(m, 0, 2 * MiB)
    evict(m, 0, MiB)
    s = m.stats()
    assert s["live_entries"] == 1 and s["hbm_blocks"] == 1 and s["blocks_reclaimed"] == 1
    evict(m, 0, MiB)
    assert m.counts["hint_untracked_blocks"] == 1


def test_evict_on_a_shared_block_drops_one_reference_at_a_time(model):
    share(model, 0, MiB)
    share(model, 0, MiB)
    assert model.blocks()[0]["ref"] == 2 and model.blocks()[0]["prefix"] == 1
    assert model.blocks()[0]["request"] == 0
    evict(model, 0, MiB)
    evict(model, 0, MiB)
    assert model.blocks()[0]["ref"] == 0
    evict(model, 0, MiB)
    assert model.blocks() == []


def test_hot_protects_for_hot_protect_steps_scans():
    m = CheckedModel(small_config(hot_protect_steps=2, **FAST))
    step(m, 10)
    hot(m, 0, MiB)
    step(m, 11)
    assert m.last_scan["protected_hot"] == 1 and m.last_scan["evictions_issued"] == 0
    step(m, 12)
    assert m.last_scan["protected_hot"] == 0 and m.last_scan["evictions_issued"] == 1


def test_r_decays_after_each_scan_and_f_saturates(model):
    for _ in range(300):
        hot(model, 0, MiB)
    step(model, 0)
    row = model.blocks()[0]
    assert (row["r"], row["f"]) == (127, 255)
    assert row["prio"] == 255 + 255 + 2 * 255  # scored before the decay


# -- DMA timing and capacity --------------------------------------------------------------
def test_transfers_complete_one_after_another_on_the_sim_clock():
    m = CheckedModel(small_config(hbm_capacity=0, hot_protect_steps=0))
    hot(m, 0, 3 * MiB)  # three blocks in T1
    step(m, 1)  # t = 1 ms: three demotions of 976,563 ns queued on channel 0
    step(m, 2)  # t = 2 ms
    assert m.stats()["evictions_completed"] == 1
    assert int(m.dir.arrived_ns[m.dir.lookup(0)]) == 1_000_000 + 976_563
    step(m, 3)
    assert m.stats()["evictions_completed"] == 2
    dma = {r["channel"]: r for r in model_text.parse_records(m.attributes()[2].show()) if "channel" in r}
    assert dma[0]["busy"] == 1 and dma[0]["current_done_ns"] == 1_000_000 + 3 * 976_563
    assert dma[1]["queued"] == 0


def test_a_full_destination_defers_demotions_lowest_priority_first():
    m = CheckedModel(small_config(hbm_capacity=4 * MiB, t1_capacity=2 * MiB, hot_protect_steps=0, **FAST))
    hot(m, 0, 4 * MiB)
    hot(m, 2 * MiB, 2 * MiB)  # blocks 2 and 3 get F = 2: higher P
    step(m, 1)
    assert m.last_scan["evictions_issued"] == 2 and m.last_scan["evictions_deferred_full"] == 2
    assert [r["moving"] for r in m.blocks()] == ["T1", "T1", None, None]


def test_prefetch_on_time_late_and_already_staged():
    m = CheckedModel(small_config(initial_tier=2))  # blocks start in T2; T2->T1 takes 976,563 ns
    step(m, 1, run=False)
    prefetch(m, 0, 2 * MiB, 2)  # two promotions queued back to back at t = 1 ms
    step(m, 2)  # t = 2 ms: the first is in, the second lands at 2,953,126 ns
    assert (m.counts["prefetch_on_time"], m.counts["prefetch_late"]) == (1, 1)
    assert m.counts["prefetch_issued_hint"] == 2
    m2 = CheckedModel(small_config())
    prefetch(m2, 0, MiB, 1)  # a new block starts in HBM: staged already
    step(m2, 1)
    assert m2.counts["prefetch_already_staged"] == 1 and m2.counts["prefetch_on_time"] == 1


def test_lateness_is_judged_at_the_target_step_even_if_its_scan_was_superseded():
    m = CheckedModel(small_config(initial_tier=2))
    prefetch(m, 0, 2 * MiB, 1)
    step(m, 1, run=False)  # t = 1 ms: the deadline
    step(m, 2, run=False)  # t = 2 ms: both promotions are in by now
    m.run_pending()
    assert (m.counts["prefetch_on_time"], m.counts["prefetch_late"]) == (1, 1)


def test_a_prefetch_reclaimed_before_its_target_is_counted_once_and_never_judged_on_another_block():
    """EVICT before the target step: the prefetch can no longer be met.  The
    entry it held may go to another block at once; reaching the old target
    judges nothing for that block (it was never prefetched)."""
    m = CheckedModel(small_config(entries=1, initial_tier=2))
    prefetch(m, 0, MiB, 5)
    evict(m, 0, MiB)
    assert m.counts["prefetch_reclaimed_before_target"] == 1
    hot(m, 7 * MiB, MiB)  # the one entry, now another block's
    for n in range(1, 7):
        step(m, n)
    c = m.counts
    assert (c["prefetch_reclaimed_before_target"], c["prefetch_on_time"], c["prefetch_late"]) == (1, 0, 0)


def test_a_block_reclaimed_after_its_target_step_is_judged_reclaimed_once():
    m = CheckedModel(small_config(initial_tier=2))
    prefetch(m, 0, MiB, 1)
    step(m, 1, run=False)  # the deadline: judged at the scan
    evict(m, 0, MiB)  # reclaimed in between
    m.run_pending()
    c = m.counts
    assert (c["prefetch_reclaimed_before_target"], c["prefetch_on_time"], c["prefetch_late"]) == (1, 0, 0)


def test_a_prefetch_target_protects_the_block_until_its_step_passes():
    m = CheckedModel(small_config(hot_protect_steps=0, **FAST))
    prefetch(m, 0, MiB, 3)
    for n in (1, 2, 3):
        step(m, n)
        assert m.last_scan["protected_prefetch"] == 1 and m.last_scan["evictions_issued"] == 0
    step(m, 4)
    assert m.last_scan["evictions_issued"] == 1 and m.blocks()[0]["target"] is None


def test_the_scan_stages_blocks_above_the_prefetch_threshold_highest_first():
    m = CheckedModel(small_config(initial_tier=2, t1_capacity=MiB))
    hot(m, 0, 2 * MiB)
    hot(m, MiB, MiB)  # block 1 scores higher
    set_weights(m, 1, 1, 2, 200, 0, 100)
    step(m, 0)
    assert m.last_scan["stage_wanted"] == 2 and m.last_scan["prefetch_issued"] == 1
    assert [r["moving"] for r in m.blocks()] == [None, "T1"]
    assert m.counts["prefetch_deferred_full"] == 1


def test_cancelled_moves_behind_a_long_transfer_never_overflow_the_queue():
    m = CheckedModel(small_config(entries=8, initial_tier=3, t3_bandwidth=2**20))  # 1 s per block
    prefetch(m, 0, MiB, 100)  # occupies the promote channel for a second
    for _ in range(40):  # each cycle leaves a cancelled slot in a 16-slot ring
        prefetch(m, MiB, MiB, 100)
        evict(m, MiB, MiB)
    assert m.counts["moves_cancelled_reclaim"] == 40
    assert m.dma.channels[1].cancelled == 40 and len(m.dma.queued_entries()) == 1


# -- registers ----------------------------------------------------------------------------------
def test_wide_register_values_are_truncated_and_logged(caplog):
    m = CheckedModel(small_config())
    with caplog.at_level(logging.INFO, logger="kvcpu_dev.model"):
        set_weights(m, 0x1FF, 1, 2, 200, 0x12345, 0xE000)
        step(m, 2**32 + 7, run=False)
    w = m.regs.weights
    assert (w.w_r, w.evict_thresh, m.step32) == (0xFF, 0x2345, 7)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "w_r" in messages[0] and "0x1ff" in messages[0] and "0xff" in messages[0]
    assert "evict_thresh" in messages[1] and str(2**32 + 7) in messages[2]


def test_unknown_registers_are_counted(model):
    model.mmio_write(0x600, 1)
    assert model.counts["unknown_reg_writes"] == 1


# -- wall clock ----------------------------------------------------------------------------------
def test_wall_clock_moves_data_while_no_step_arrives():
    m = CheckedModel(small_config(clock="wall", hbm_capacity=0, hot_protect_steps=0))
    hot(m, 0, MiB)
    step(m, 1)  # one T1 -> T2 move of ~1 ms
    before = m.now_ns()
    time.sleep(0.005)
    s = m.stats()
    assert s["now_ns"] - before >= 5_000_000 and s["evictions_completed"] == 1


# -- what users read ------------------------------------------------------------------------------
def test_attribute_files_render_what_the_python_views_return():
    m = CheckedModel(small_config(hot_protect_steps=0))
    hot(m, 0, 3 * MiB)
    share(m, 5 * MiB, MiB)
    prefetch(m, 7 * MiB, MiB, 9)
    step(m, 1)
    files = {a.name: a for a in m.attributes()}
    assert set(files) == {"model_stats", "tiers", "dma", "blocks", "model_config"}
    assert all(a.store is None for a in files.values())
    assert model_text.parse_stats(files["model_stats"].show()) == m.stats()
    assert model_text.parse_blocks(files["blocks"].show()) == m.blocks()
    assert model_text.parse_records(files["tiers"].show()) == views.tiers(m)
    assert ModelConfig.from_dict(tomllib.loads(files["model_config"].show())) == m.config


def test_blocks_filter_by_tier_and_address_range(model):
    hot(model, 0, 10 * MiB)  # 8 in HBM, 2 in T1
    assert [r["va"] for r in model.blocks(tier="T1")] == [8 * MiB, 9 * MiB]
    assert [r["va"] for r in model.blocks(tier=0, va_range=(MiB + 1, 3 * MiB))] == [MiB, 2 * MiB]
    assert model.blocks(va_range=(5, 5)) == []
    with pytest.raises(ValueError):
        model.blocks(tier="T9")


def test_an_unchecked_model_needs_no_test_scaffolding():
    m = DeviceModel()
    m.mmio_write(regs.BOOST_ADDR, 0)
    m.mmio_write(regs.BOOST_LEN, 1)
    m.mmio_write(regs.STEP_ADVANCE, 1)
    assert m.run_pending()
    m.check_invariants()
    assert m.stats()["live_entries"] == 1
