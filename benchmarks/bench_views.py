"""No reader waits for a flood (issue 24: 3): how long what users read
takes while the device is flooded, against the same reads on an idle
daemon, in one run.

Run as root:  .venv/bin/python benchmarks/bench_views.py [--seconds S] [--loads idle,mixed,steps]

Loads, each on a fresh daemon with --metrics:
  idle      nothing
  mixed     2 C processes of random STEP / HOT / EVICT / PREFETCH / SHARE
            over 100,000 blocks of 2 MiB, and a `blocks` reader every 2 s
            (the soak's load)
  steps     8 C processes flooding STEP_ADVANCE (coalesced by the fast path:
            the ring never fills, so it never raises the Python thread)

Readers, each its own process (read_loop.c) reading every 0.25 s, one
after another:
  model_stats   the model's view (applies every command answered before it)
  metrics       the attribute `kvctl top` reads (Prometheus text, the model's
                counters read in process)
  scrape        GET /metrics on the --metrics endpoint (another thread's
                call into the daemon's loop)
  telemetry     the driver's view (no model in it)

A row: reads, median, p99 and max in ms, and how long the slowest read's
own process waited to run meanwhile (the readers share the CPU with the
floods too; the rest is the daemon's), and whether it overlapped a read of
`blocks` (a listing of every block, rendered on the thread that answers
the others; its own rows say what it costs under the mixed load and on
the same daemon idle after it).  The target: max <= 100 ms for the
model's views, the metrics and the scrape, under every load, the reader's
own wait included.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import time
from typing import NamedTuple

from _common import Report, build_c, daemon, scratch

BLOCKS = 100_000
READERS = ("model_stats", "metrics", "scrape", "telemetry")
#: Held to the target (the listing of the mixed load's 100,000 blocks too);
#: `telemetry`, the driver's view with no model in it, is reported.
TARGETED = ("model_stats", "metrics", "scrape", "blocks", "blocks, idle after")
TARGET_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reader(bin_, what: str, target, period: float, seconds: float, offset: float) -> subprocess.Popen:
    """A reader in its own process (read_loop.c), as a user's `cat` or
    Prometheus is: threads of this process would also wait for each
    other's GIL, starved by the same floods."""
    return subprocess.Popen([str(bin_), what, str(target), str(period), str(seconds), str(offset)],
                            stdout=subprocess.PIPE, text=True)


class Read(NamedTuple):
    ms: float
    waited_ms: float  # the reader's own run-queue wait meanwhile
    began: float  # CLOCK_MONOTONIC, s

    def overlaps(self, other: Read) -> bool:
        return self.began < other.began + other.ms / 1e3 and other.began < self.began + self.ms / 1e3


def times(proc: subprocess.Popen) -> list[Read]:
    out, _ = proc.communicate()
    return [Read(*map(float, line.split())) for line in out.splitlines()]


def load(kind: str, bin_, node, seconds: float) -> list[subprocess.Popen]:
    if kind == "mixed":
        return [subprocess.Popen([str(bin_), str(node), "mixed", str(seconds), str(BLOCKS), str(s)],
                                 stdout=subprocess.DEVNULL) for s in (1, 2)]
    if kind == "steps":
        return [subprocess.Popen([str(bin_), str(node), "flood", str(seconds)], stdout=subprocess.DEVNULL)
                for _ in range(8)]
    return []


def run_load(kind: str, load_bin, read_bin, tmp, seconds: float) -> dict[str, list[Read]]:
    port = free_port()
    with daemon(f"kvviews{os.getpid()}{kind}", tmp / kind, extra=("--metrics", f"127.0.0.1:{port}")) as d:
        attrs = d["attr_dir"]
        procs = load(kind, load_bin, d["node"], seconds)
        time.sleep(0.5)  # the load under way
        readers = {name: reader(read_bin, "http" if name == "scrape" else "file",
                                port if name == "scrape" else attrs / name, 0.25, seconds - 1.0,
                                index * 0.25 / len(READERS))  # one after another, not all at once
                   for index, name in enumerate(READERS)}
        blocks = reader(read_bin, "file", attrs / "blocks", 2.0, seconds - 1.0, 0) if kind == "mixed" else None
        got = {name: times(r) for name, r in readers.items()}
        if blocks is not None:
            got["blocks"] = times(blocks)
        for p in procs:
            p.wait()
        if kind == "mixed":  # the same listing on the daemon idle again
            got["blocks, idle after"] = times(reader(read_bin, "file", attrs / "blocks", 0.25, 2.0, 0))
    return got


def add_row(report: Report, kind: str, name: str, reads: list[Read], blocks: list[Read]) -> None:
    if not reads:
        report.add(f"{kind}: {name}", "no read finished", "", False)
        return
    ms = sorted(read.ms for read in reads)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    slowest = max(reads, key=lambda read: read.ms)
    during = ", during a blocks read" if not name.startswith("blocks") and any(slowest.overlaps(b) for b in blocks) else ""
    targeted = name in TARGETED
    report.add(f"{kind}: {name} ms (reads | median | p99 | max, of which the reader waited)",
               f"{len(ms)} | {statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f}, {slowest.waited_ms:.1f}{during}",
               f"max <= {TARGET_MS:.0f} ms" if targeted else "", ms[-1] <= TARGET_MS if targeted else None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30, help="each load's length")
    ap.add_argument("--loads", default="idle,mixed,steps", help="which loads, comma-separated")
    args = ap.parse_args()
    unknown = set(args.loads.split(",")) - {"idle", "mixed", "steps"}
    if unknown:
        ap.error(f"--loads: no such load: {', '.join(sorted(unknown))} (idle, mixed, steps)")
    report = Report("bench_views: what users read while the device is flooded (one run)")
    with scratch() as tmp:
        load_bin = build_c("ioctl_load.c", tmp)
        read_bin = build_c("read_loop.c", tmp)
        for kind in args.loads.split(","):
            got = run_load(kind, load_bin, read_bin, tmp, args.seconds)
            for name in (*READERS, "blocks", "blocks, idle after"):
                if name in got:
                    add_row(report, kind, name, got[name], got.get("blocks", []))
    return report.finish()


if __name__ == "__main__":
    raise SystemExit(main())
