"""The C hint engine (model/hints.c, model/fast.py) against the Python
model, its specification: random command streams through both, every
field of the state compared after every command.

The engine takes what it can (hints over fewer than 64 blocks) and hands
the rest back; the streams mix in everything it must hand back (STEPs,
weights, the window, large, zero-length and wrapping ranges, unknown
registers, commands without writes) and configurations that reach its edge
cases (a full directory, tiers without room, spilled allocations, a
window, either clock)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkit import MiB, small_config

from kvcpu_dev.device import regs
from kvcpu_dev.model import DeviceModel, fast

pytestmark = pytest.mark.skipif(not fast.available(), reason="kvcpu_dev.model._hints is not built")

U32, U64 = 2**32 - 1, 2**64 - 1
REGS = 6  # register writes a ring event holds

CONFIGS = [
    dict(entries=64),
    dict(entries=16, hot_protect_steps=1),  # the directory fills
    dict(entries=64, hbm_capacity=4 * MiB, t1_capacity=3 * MiB, t2_capacity=6 * MiB, t3_capacity=100 * MiB),
    dict(entries=8, initial_tier=2, t2_bandwidth=2**29),
    dict(entries=32, initial_tier=2, t1_capacity=2 * MiB, t2_capacity=4 * MiB, t3_capacity=8 * MiB),
    dict(entries=64, clock="wall"),
]


def hint_range(rng: random.Random) -> tuple[int, int]:
    """Mostly a block or two; sometimes unaligned, zero, over 64 blocks, or wrapping past 2**64."""
    r = rng.random()
    if r < 0.05:
        return rng.randrange(0, 40) * MiB, 0
    if r < 0.08:
        return rng.randrange(0, 8) * MiB, rng.randrange(64, 200) * MiB
    if r < 0.10:
        return U64 - rng.randrange(0, 3 * MiB), rng.randrange(1, 4 * MiB)
    if r < 0.2:
        return rng.randrange(0, 40 * MiB), rng.randrange(1, 3 * MiB)
    return rng.randrange(0, 40) * MiB, rng.choice([MiB, MiB, 2 * MiB, 3 * MiB])


def command(rng: random.Random, step: list[int]) -> list[tuple[int, int]]:
    """One command's register writes, in the driver's order."""
    kind = rng.choices(["step", "hot", "evict", "prefetch", "share", "weights", "window", "odd", "none"],
                       [20, 20, 18, 18, 12, 2, 2, 1, 1])[0]
    if kind == "step":
        step[0] += rng.choice([1, 1, 1, 2, 5])
        return [(regs.STEP_ADVANCE, step[0] if rng.random() > 0.01 else U32 + 1 + step[0])]
    if kind == "prefetch":
        va, length = hint_range(rng)
        target = step[0] + rng.randrange(0, 10) if rng.random() > 0.01 else U32 + 5
        return [(regs.PREFETCH_ADDR, va), (regs.PREFETCH_LEN, length), (regs.PREFETCH_STEP, target)]
    if kind in ("hot", "evict", "share"):
        va, length = hint_range(rng)
        addr, len_ = {"hot": (regs.BOOST_ADDR, regs.BOOST_LEN), "evict": (regs.IMEVICT_ADDR, regs.IMEVICT_LEN),
                      "share": (regs.SHARE_ADDR, regs.SHARE_LEN)}[kind]
        return [(addr, va), (len_, length)]
    if kind == "weights":
        return [(regs.WEIGHT_D, rng.randrange(0, 300)), (regs.EVICT_THRESH, rng.randrange(0, 0x11000))]
    if kind == "window":
        return [(regs.PREFETCH_WINDOW, rng.choice([0, 0, 2, 4])), (regs.STEP_ADVANCE, step[0])]
    if kind == "odd":
        return [(0x0FF8, 1)]
    return []


def columns(cmds: list[list[tuple[int, int]]], times: list[int]) -> tuple[np.ndarray, ...]:
    """Commands as the ring reader hands them to take_commands."""
    n = len(cmds)
    nregs = np.array([len(c) for c in cmds], np.uint32)
    offsets, values = np.zeros((n, REGS), np.uint32), np.zeros((n, REGS), np.uint64)
    for k, c in enumerate(cmds):
        for j, (offset, value) in enumerate(c):
            offsets[k, j], values[k, j] = offset, value
    return np.array(times, np.uint64), nregs, offsets, values


def by_writes(m: DeviceModel, cmds: list[list[tuple[int, int]]], times: list[int]) -> None:
    for c, t in zip(cmds, times):
        if c:
            m.at(t)
            for offset, value in c:
                m.mmio_write(offset, value)
        m.work()


def by_engine(m: DeviceModel, cmds: list[list[tuple[int, int]]], times: list[int]) -> None:
    """The ring reader's loop (driver/reader.py _deliver_writes)."""
    times_, nregs, offsets, values = columns(cmds, times)
    pos, end = 0, len(cmds)
    while pos < end:
        pos = m.take_commands(times_, nregs, offsets, values, pos, end)
        if pos == end:
            break
        n = int(nregs[pos])
        if n:
            m.at(int(times_[pos]))
            for offset, value in zip(offsets[pos, :n].tolist(), values[pos, :n].tolist()):
                m.mmio_write(offset, value)
        m.work()
        pos += 1


def state(m: DeviceModel) -> dict[str, Any]:
    """Everything a command can change (the engine's index mirror is
    checked against the dict by check_invariants)."""
    d, dma = m.dir, m.dma
    out = {f"dir.{name}": a.tolist() for name, a in d.arrays().items()}
    out.update(index=dict(d.index), free=d.free_list(), counts=dict(m.counts), last_scan={
        k: v for k, v in m.last_scan.items() if k != "scan_ns"})
    for name in ("capacity", "resident", "inbound", "bytes_in", "bytes_out", "tally", "bytes_moved"):
        out[f"dma.{name}"] = getattr(dma, name).tolist()
    for k, ch in enumerate(dma.channels):
        live = np.arange(ch.head, ch.tail) % ch.slots
        out[f"chan{k}"] = (ch.sc.tolist(), ch.entry[live].tolist(), ch.src[live].tolist(), ch.dst[live].tolist(),
                           ch.ready[live].tolist())
    out.update(targets=list(m._targets), windowed=list(m._windowed), due=list(m._due), arm_seq=m._arm_seq.tolist(),
               arms=m._arms, latch=m._latch.tolist(), step32=m.step32, window=m.window, wall=m._wall_ns,
               sim=m._sim_ns, pending=None if m._pending is None else (m._pending[0], m._pending[2]))
    del out["counts"]["scan_ns_total"], out["counts"]["scan_ns_max"]  # wall-clock durations
    return out


def pair(config: dict[str, Any]) -> tuple[DeviceModel, DeviceModel]:
    spec, engine = DeviceModel(small_config(**config), accelerate=False), DeviceModel(small_config(**config))
    engine._t0 = spec._t0  # one wall clock, at its start until a command comes (not read from the machine)
    spec.at(spec._t0)
    engine.at(spec._t0)
    spec.incremental = engine.incremental = True
    return spec, engine


def run_both(config: dict[str, Any], seed: int, commands: int, chunk: int) -> int:
    """``commands`` random commands through both, in chunks of ``chunk``
    (a scan between chunks, as the daemon runs them between batches);
    returns how many the engine took."""
    rng = random.Random(seed)
    spec, engine = pair(config)
    step, t = [0], spec._t0
    taken = 0
    for _ in range(commands // chunk):
        cmds = [command(rng, step) for _ in range(chunk)]
        times = []
        for _ in cmds:
            t += rng.choice([0, 1_000, 50_000, 2_000_000])
            times.append(t)
        by_writes(spec, cmds, times)
        before = engine.counts["hint_hot"] + engine.counts["hint_evict"] + engine.counts["hint_prefetch"] \
            + engine.counts["hint_share"]
        by_engine(engine, cmds, times)
        taken += engine.counts["hint_hot"] + engine.counts["hint_evict"] + engine.counts["hint_prefetch"] \
            + engine.counts["hint_share"] - before
        assert state(engine) == state(spec)
        engine.check_invariants()
        if rng.random() < 0.7:
            spec.run_pending()
            engine.run_pending()
            assert state(engine) == state(spec)
    return taken


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("seed", range(4))
def test_random_streams_leave_the_same_state(config: dict[str, Any], seed: int) -> None:
    assert run_both(config, seed, commands=3000, chunk=50) > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), config=st.sampled_from(CONFIGS), chunk=st.sampled_from([1, 7, 256]))
def test_any_chunking_leaves_the_same_state(seed: int, config: dict[str, Any], chunk: int) -> None:
    run_both(config, seed, commands=768, chunk=chunk)


def test_the_engine_takes_the_bulk_of_a_mixed_stream() -> None:
    """The engine is not silently handing everything back."""
    spec, engine = pair(dict(entries=4096))
    rng = random.Random(7)
    step = [0]
    cmds = [c for c in (command(rng, step) for _ in range(5000)) if c and c[0][0] != 0x0FF8]
    times = [spec._t0 + 1000 * k for k in range(len(cmds))]
    times_, nregs, offsets, values = columns(cmds, times)
    pos = taken = 0
    while pos < len(cmds):
        stop = engine.take_commands(times_, nregs, offsets, values, pos, len(cmds))
        taken += stop - pos
        if stop < len(cmds):
            by_writes(engine, [cmds[stop]], [times[stop]])
        pos = stop + 1
    hints = sum(1 for c in cmds if c[-1][0] in (regs.BOOST_LEN, regs.IMEVICT_LEN, regs.PREFETCH_STEP, regs.SHARE_LEN))
    assert taken >= 0.8 * hints


def test_without_the_engine_nothing_is_taken() -> None:
    m = DeviceModel(small_config(), accelerate=False)
    times, nregs, offsets, values = columns([[(regs.BOOST_ADDR, 0), (regs.BOOST_LEN, MiB)]], [1])
    assert m.take_commands(times, nregs, offsets, values, 0, 1) == 0


def test_the_index_mirror_survives_collisions_and_deletion_runs() -> None:
    """Open addressing with backward-shift deletion: random puts and drops
    of clustered keys against a dict."""
    m = DeviceModel(small_config(entries=64))
    mirror, truth = m._engine, dict[int, int]()
    assert mirror is not None
    rng = random.Random(3)
    for _ in range(20_000):
        block = rng.randrange(0, 200) * rng.choice([1, 128, 2**40])
        if block in truth and rng.random() < 0.5:
            mirror.drop(block)
            del truth[block]
        elif block in truth or len(truth) < 64:
            truth[block] = rng.randrange(0, 64)
            mirror.put(block, truth[block])
    assert mirror.mirrored() == truth
