"""Where the scheduler puts a fresh client and its server when nothing is
pinned, and what decides it: the evidence behind bench_fastpath's unpinned
rows.

Run as root:  .venv/bin/python benchmarks/bench_placement.py [--runs N] [--work-ns NS]

Unpinned, a client and its server either share a CPU for the whole run
(8-12 us a round trip here) or not (25-60 us: an idle vCPU halts, and
waking it goes through the host).  Which one a run gets is the
scheduler's choice at the run's first round trips, and this measures how
often each server gets the shared CPU.  It runs short clients of back-to-back
STEPs against three servers in random order:

  C   the no-op C libfuse3 server (bench_fastpath's baseline)
  W   the same server spinning --work-ns before each reply (a server that
      does some work per request, and nothing else different)
  K   kvcpu-dev

and tabulates, by the server of the run before and of this run, the share
of runs on a shared CPU and the mean round trip.  A run counts as on a
shared CPU when its median is under twice the no-op server's median with
client and server pinned to one CPU (measured first, in the same run).

Reading it: if W's share falls below C's as K's does, per-request
service time alone moves the placement, and a server doing the driver's
work cannot match a server doing nothing in an unpinned comparison on this
machine, whatever else it does.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import subprocess
import sys

from _common import build_c, client_us, daemon, noop_server, pinned, scratch, set_affinity


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=900, help="client runs in all (default 900)")
    ap.add_argument("--count", type=int, default=1000, help="STEPs a run (default 1000)")
    ap.add_argument("--work-ns", type=int, default=300, help="W's spin before each reply (default 300)")
    args = ap.parse_args()
    with scratch() as tmp:
        rtt = build_c("ioctl_rtt.c", tmp)
        noop = build_c("noop_fuse.c", tmp, fuse=True)
        work = build_c("noop_fuse.c", tmp, fuse=True, defines={"WORK_NS": args.work_ns}, name="noop_work")
        servers = {"C": noop_server(noop, tmp / "c"), "W": noop_server(work, tmp / "w")}
        try:
            with daemon("kvplace", tmp / "k") as d:
                nodes = {"C": tmp / "c" / "device", "W": tmp / "w" / "device", "K": d["node"]}
                cpus = os.sched_getaffinity(0)
                last = max(cpus)
                set_affinity(servers["C"].pid, {last})
                shared = statistics.median(client_us(pinned(last, [rtt, nodes["C"], args.count, "step"]))[1]
                                           for _ in range(5))
                set_affinity(servers["C"].pid, cpus)
                threshold = 2 * shared
                table: dict[str, list[float]] = collections.defaultdict(list)
                before = "C"
                for _ in range(args.runs):
                    now = random.choice("CWK")
                    table[before + now].append(client_us([rtt, nodes[now], args.count, "step"])[1])
                    before = now
        finally:
            for name, proc in servers.items():
                subprocess.run(["umount", "-l", str(tmp / name.lower())], stderr=subprocess.DEVNULL)
                proc.terminate()
                proc.wait()
    print(f"\nUnpinned placement: {args.runs} runs of {args.count} back-to-back STEPs, random order; "
          f"W = the no-op server with {args.work_ns} ns of work per ioctl")
    print(f"  shared CPU: a run's median under {threshold:.1f} us (2x the no-op server pinned with "
          f"its client on one CPU, {shared:.1f} us)")
    print(f"  {'before -> this':<15} {'runs':>5} {'shared CPU':>11} {'mean us':>8}")
    for key in sorted(table, key=lambda k: (k[1], k[0] != k[1], k[0])):
        runs = table[key]
        share = sum(1 for m in runs if m < threshold) / len(runs)
        print(f"  {key[0]} -> {key[1]:<10} {len(runs):>5} {share:>10.0%} {statistics.mean(runs):>8.1f}")
    for server in "CWK":
        runs = [m for key, ms in table.items() if key[1] == server for m in ms]
        share = sum(1 for m in runs if m < threshold) / len(runs)
        print(f"  {server} overall       {len(runs):>5} {share:>10.0%} {statistics.mean(runs):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
