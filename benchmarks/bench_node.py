"""Through the device node: per-ioctl round trip against a no-op C libfuse3
server of the same transport (built here), start-up time, idle memory.

Run as root:  .venv/bin/python benchmarks/bench_node.py [--count N] [--rounds R]

The two servers are measured in alternating rounds in one run, so the
machine's noise hits both alike; the figure is the ratio of medians.
Placements (both servers always placed alike):
  apart     servers on the last CPU, client on the first (a runtime's decode
            loop keeps its own cores busy; the daemon runs beside it): the
            per-request cost of the server shows over the same cross-CPU
            wake-ups -- the target applies here
  together  servers and client on the last CPU: two context switches per
            ioctl, no cross-CPU wake-up, so the server's own cost shows most
  unpinned  nothing pinned: where the scheduler puts each pair decides (it
            tends to keep the C server beside its client, and not ours)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import (
    Report,
    build_c,
    client_us,
    daemon,
    median,
    noop_server,
    pinned,
    scratch,
    set_affinity,
)


def rtt(client, node, count: int, cpu) -> float:
    return client_us(pinned(cpu, [client, node, count, "step"]))[1]  # the median


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=4000, help="ioctls per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    last = ncpu - 1
    # placement -> (CPUs for the servers, CPU for the client)
    placements = {"apart": ({last}, 0), "together": ({last}, last)} if ncpu > 1 else {}
    placements["unpinned"] = (set(range(ncpu)), None)
    report = Report("kvcpu-dev through the node (FUSE transport)")
    with scratch() as tmp:
        client = build_c("ioctl_rtt.c", tmp)
        noop = build_c("noop_fuse.c", tmp, fuse=True)
        server = noop_server(noop, tmp / "noop")
        try:
            with daemon("kvbench0", tmp) as d:
                for place, (server_cpus, cpu) in placements.items():
                    set_affinity(server.pid, server_cpus)
                    set_affinity(d["pid"], server_cpus)
                    ours, base = [], []
                    for _ in range(args.rounds):
                        base.append(rtt(client, tmp / "noop" / "device", args.count, cpu))
                        ours.append(rtt(client, d["node"], args.count, cpu))
                    ratio = median(ours) / median(base)
                    report.add(f"round trip, {place}",
                               f"{median(ours):.1f} us vs no-op C {median(base):.1f} us = {ratio:.2f}x",
                               "<= 1.15x" if place == "apart" else "",
                               ratio <= 1.15 if place == "apart" else None)
                time.sleep(1.0)
                rss = idle_rss_mb(d["pid"])
                report.add("idle daemon RSS", f"{rss:.1f} MB", "<= 60 MB", rss <= 60)
        finally:
            subprocess.run(["umount", "-l", str(tmp / "noop")], stderr=subprocess.DEVNULL)
            server.terminate()
            server.wait()
        starts = []
        for i in range(5):
            with daemon(f"kvbench-s{i}", tmp / f"s{i}") as d:
                starts.append(d["start_s"])
        worst = max(starts)
        report.add("kvcpu-dev --mock until the node answers",
                   f"median {median(starts) * 1000:.0f} ms, worst {worst * 1000:.0f} ms",
                   "<= 1 s", worst <= 1.0)
    return report.finish()


def idle_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


if __name__ == "__main__":
    sys.exit(main())
