"""Timing of kvcpu-eval's classic policies (issue 11, item 1).

    python3 benchmarks/bench_eval.py [TRACE] [--capacity-blocks 2%,4%,6%,8%,10%] [--repeat N]

Reads the trace (default: the shipped Mooncake conversation trace), then
runs LRU, ARC, priority-LRU and Belady at the 5 capacities in one process,
as ``kvcpu-eval --policies lru,arc,prio-lru,belady`` does with ``--jobs 1``,
and prints the time of each policy (summed over capacities), the total
and the hit ratios.  Target: the four policies at 5 capacities in under a
minute (trace reading excluded, Belady's next-use precomputation
included).  Exits 1 if the target is missed.  With ``--repeat N`` the
median of N runs is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvcpu_dev.evaluation import runner  # noqa: E402
from kvcpu_dev.evaluation.policies import POLICIES, Cache, Options  # noqa: E402
from kvcpu_dev.evaluation.traces import read_trace  # noqa: E402

SHIPPED = ROOT.parent / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
CLASSIC = ("lru", "arc", "prio-lru", "belady")
TARGET_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", nargs="?", type=Path, default=SHIPPED)
    ap.add_argument("--capacity-blocks", default="2%,4%,6%,8%,10%")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    trace = read_trace(args.trace)
    read_s = time.perf_counter() - t0
    caps = runner.parse_capacities(args.capacity_blocks, trace.unique_blocks)
    print(f"{trace.name}: {len(trace.requests)} requests, {len(trace.accesses)} accesses, "
          f"{trace.unique_blocks} unique blocks; read in {read_s:.2f} s")
    print(f"capacities: {', '.join(map(str, caps))} blocks; {args.repeat} run(s), median shown")

    per_policy: dict[str, list[float]] = {p: [] for p in CLASSIC}
    totals: list[float] = []
    hits: dict[str, list[float]] = {}
    opts = Options()
    for _ in range(args.repeat):
        cache = Cache(trace)  # Belady's next uses are computed inside the timing
        total = 0.0
        for p in CLASSIC:
            t = time.perf_counter()
            runs = [POLICIES[p](cache, cap, opts) for cap in caps]
            dt = time.perf_counter() - t
            per_policy[p].append(dt)
            total += dt
            hits[p] = [c.hit_ratio for c in runs]
        totals.append(total)

    width = max(map(len, CLASSIC))
    for p in CLASSIC:
        ratios = "  ".join(f"{100 * h:5.1f}%" for h in hits[p])
        print(f"  {p:<{width}}  {statistics.median(per_policy[p]):6.2f} s   hit ratio {ratios}")
    total = statistics.median(totals)
    ok = total < TARGET_S
    print(f"total: {total:.2f} s for {len(CLASSIC)} policies x {len(caps)} capacities "
          f"(target < {TARGET_S:.0f} s): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
