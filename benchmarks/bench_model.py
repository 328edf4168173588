"""In-process benchmarks of the device model (issue 4, item 7).

    python3 benchmarks/bench_model.py [--repeat N]

Prints a table and exits 1 if a target is missed:
- a STEP scan over 65,536 live entries: median <= 1 ms, and >= 50x faster
  than the per-entry reference in the same run;
- the full directory's arrays <= 8 MiB;
- a single-block hint at a full directory: median <= 20 us;
- a mixed command stream (bench_mixed.py's: STEP / HOT / EVICT / PREFETCH /
  SHARE, one in five each, over 100,000 blocks), as the ring reader hands
  it to the model: the C hint engine (model/hints.c) against the Python
  model alone, per command, alternated round by round (reported).

The scan is timed twice: the HEPC scan alone (what the reference does), and
the whole run_pending() a STEP triggers (DMA completions, deadline checks,
scan, queueing), in the steady state of the documented default weights,
where every non-prefix block is an eviction candidate at every step.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from kvcpu_dev.device import regs as R  # noqa: E402
from kvcpu_dev.model import DeviceModel, ModelConfig, hepc, reference  # noqa: E402

ENTRIES = 65536
#: The mixed stream: bench_mixed.py's address space, its clients' mix.
MIXED_BLOCKS, MIXED_COMMANDS, MIXED_ROUNDS = 100_000, 50_000, 4


def full_model() -> DeviceModel:
    """65,536 blocks, one in 64 a shared prefix, all scanned once."""
    m = DeviceModel(ModelConfig(entries=ENTRIES))
    bs = m.block_size
    for b in range(ENTRIES):
        m.mmio_write(R.BOOST_ADDR, b * bs)
        m.mmio_write(R.BOOST_LEN, bs)
        if b % 64 == 0:
            m.mmio_write(R.SHARE_ADDR, b * bs)
            m.mmio_write(R.SHARE_LEN, bs)
    assert len(m.dir) == ENTRIES
    return m


def mixed_stream(n: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    """``n`` commands as benchmarks/ioctl_load.c's ``mixed`` sends them
    (its xorshift, its mix), as the ring reader's columns: times 9 us
    apart, register counts, offsets, values."""
    mask = (1 << 64) - 1
    x, step = seed, 0
    nregs = np.zeros(n, np.uint32)
    offsets, values = np.zeros((n, 6), np.uint32), np.zeros((n, 6), np.uint64)
    hints = ((R.BOOST_ADDR, R.BOOST_LEN), (R.IMEVICT_ADDR, R.IMEVICT_LEN), (R.PREFETCH_ADDR, R.PREFETCH_LEN),
             (R.SHARE_ADDR, R.SHARE_LEN))
    for k in range(n):
        x ^= x >> 12
        x ^= (x << 25) & mask
        x ^= x >> 27
        r = (x * 0x2545F4914F6CDD1D) & mask
        kind = r % 5
        if kind == 0:
            step += 1
            writes = [(R.STEP_ADVANCE, step)]
        else:
            va, length = ((r >> 8) % MIXED_BLOCKS) << 21, 2 << 20
            writes = list(zip(hints[kind - 1], (va, length)))
            if kind == 3:
                writes.append((R.PREFETCH_STEP, step + 1 + (r >> 40) % 8))
        nregs[k] = len(writes)
        for j, (offset, value) in enumerate(writes):
            offsets[k, j], values[k, j] = offset, value
    times = np.arange(n, dtype=np.uint64) * 9000 + time.monotonic_ns()
    return times, nregs, offsets, values


def apply_stream(m: DeviceModel, columns: tuple[np.ndarray, ...]) -> None:
    """As driver/reader.py delivers: segments of 256, what the model takes
    at once, the rest write by write; a scan after each segment."""
    times, nregs, offsets, values = columns
    for start in range(0, len(times), 256):
        pos, end = start, min(len(times), start + 256)
        while pos < end:
            pos = m.take_commands(times, nregs, offsets, values, pos, end)
            if pos == end:
                break
            m.at(int(times[pos]))
            for offset, value in zip(offsets[pos, :nregs[pos]].tolist(), values[pos, :nregs[pos]].tolist()):
                m.mmio_write(offset, value)
            pos += 1
        m.run_pending()


def bench_mixed_stream() -> dict[str, list[float]]:
    """Seconds per command, engine and Python alone, alternated (ABBA)."""
    out: dict[str, list[float]] = {"C engine": [], "Python alone": []}
    for r, name in zip(range(2 * MIXED_ROUNDS), itertools.cycle(["C engine", "Python alone", "Python alone",
                                                                  "C engine"])):
        m = DeviceModel(ModelConfig(entries=ENTRIES), accelerate=name == "C engine")
        m.incremental = True
        apply_stream(m, mixed_stream(MIXED_COMMANDS, seed=r + 1))  # a warm directory
        timed = mixed_stream(MIXED_COMMANDS, seed=r + 100)
        t = time.perf_counter()
        apply_stream(m, timed)
        out[name].append((time.perf_counter() - t) / MIXED_COMMANDS)
    return out


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def bench_run_pending(m: DeviceModel, repeat: int) -> list[float]:
    out = []
    for n in range(1, repeat + 1):
        m.mmio_write(R.STEP_ADVANCE, n)
        t = time.perf_counter()
        m.run_pending()
        out.append(time.perf_counter() - t)
    return out


def bench_scan(m: DeviceModel, repeat: int) -> list[float]:
    scanner, w, room = hepc.Scanner(ENTRIES), m.regs.weights, m.dma.room()
    out = []
    for n in range(repeat):
        t = time.perf_counter()
        scanner.scan(m.dir, m.step32 + n, w, m.config.hot_protect_steps, room)
        out.append(time.perf_counter() - t)
    return out


def bench_reference(m: DeviceModel, repeat: int) -> list[float]:
    items, w, room = reference.entries_from_directory(m.dir), m.regs.weights, m.dma.room()
    out = []
    for n in range(repeat):
        t = time.perf_counter()
        reference.decide(items, m.step32 + n, w, m.config.hot_protect_steps, room)
        out.append(time.perf_counter() - t)
    return out


def bench_hints(m: DeviceModel, repeat: int) -> dict[str, list[float]]:
    """One-block HOT, PREFETCH, SHARE and EVICT (+ re-allocation) at a full
    directory, each timed as the driver's whole register sequence."""
    bs = m.block_size
    seqs = {
        "hot": lambda b: ((R.BOOST_ADDR, b * bs), (R.BOOST_LEN, bs)),
        "prefetch": lambda b: ((R.PREFETCH_ADDR, b * bs), (R.PREFETCH_LEN, bs), (R.PREFETCH_STEP, m.step32 + 2)),
        "share": lambda b: ((R.SHARE_ADDR, b * bs), (R.SHARE_LEN, bs)),
        "evict+realloc": lambda b: ((R.IMEVICT_ADDR, b * bs), (R.IMEVICT_LEN, bs), (R.BOOST_ADDR, b * bs), (R.BOOST_LEN, bs)),
    }
    out = {}
    for name, seq in seqs.items():
        samples = []
        for n in range(repeat):
            writes = seq((n * 7919) % ENTRIES)
            t = time.perf_counter()
            for off, v in writes:
                m.mmio_write(off, v)
            samples.append(time.perf_counter() - t)
        out[name] = samples
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200, help="samples per measurement")
    args = ap.parse_args()

    t = time.perf_counter()
    m = full_model()
    fill_s = time.perf_counter() - t
    run_pending = bench_run_pending(m, args.repeat)  # reaches the default-weights steady state
    scan = bench_scan(m, args.repeat)
    ref = bench_reference(m, max(3, args.repeat // 40))
    hints = bench_hints(m, args.repeat * 10)
    m.check_invariants()
    arrays = m.dir.nbytes()

    ratio = median_us(ref) / median_us(scan)
    rows = [
        ("HEPC scan, 65,536 live entries (median)", f"{median_us(scan):.0f} us", "<= 1000 us", median_us(scan) <= 1000),
        ("run_pending after STEP (median)", f"{median_us(run_pending):.0f} us", "<= 1000 us", median_us(run_pending) <= 1000),
        ("run_pending after STEP (p90)", f"{statistics.quantiles(run_pending, n=10)[-1] * 1e6:.0f} us", "-", True),
        ("reference scan (median)", f"{median_us(ref) / 1000:.1f} ms", "-", True),
        ("vectorized / reference speed-up", f"{ratio:.0f}x", ">= 50x", ratio >= 50),
        ("directory arrays", f"{arrays / 2**20:.2f} MiB", "<= 8 MiB", arrays <= 8 * 2**20),
        ("DMA queue arrays (not directory)", f"{m.dma.nbytes() / 2**20:.2f} MiB", "-", True),
    ]
    for name, samples in hints.items():
        med = median_us(samples)
        rows.append((f"one-block {name} at full directory (median)", f"{med:.1f} us", "<= 20 us", med <= 20))
    rows.append(("fill 65,536 blocks by HOT (+ 1,024 SHARE)", f"{fill_s:.2f} s", "-", True))
    mixed = bench_mixed_stream()
    engine, python = median_us(mixed["C engine"]), median_us(mixed["Python alone"])
    rows.append(("mixed stream, a command: C engine | Python alone", f"{engine:.2f} | {python:.2f} us", "-", True))
    rows.append(("mixed stream: Python alone / C engine", f"{python / engine:.1f}x", "-", True))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>12}  {'target':>10}  ok")
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:>12}  {target:>10}  {'yes' if ok else 'NO'}")
    s = m.stats()
    print(f"\nlast scan: {s['last_scan_evict_candidates']} eviction candidates of {s['last_scan_live']} live, "
          f"{s['last_scan_protected_ref']} protected by refcount, {s['last_scan_evictions_issued']} demotions issued; "
          f"tiers HBM/T1/T2/T3 = {s['hbm_blocks']}/{s['t1_blocks']}/{s['t2_blocks']}/{s['t3_blocks']} blocks")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
