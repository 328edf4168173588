"""No reader waits for a flood (issue 24: 3): how long what users read
takes while the device is flooded, against the same reads on an idle
daemon, in one run.

Run as root:  .venv/bin/python benchmarks/bench_views.py [--seconds S]

Loads, each on a fresh daemon with --metrics:
  idle      nothing
  mixed     2 C processes of random STEP / HOT / EVICT / PREFETCH / SHARE
            over 100,000 blocks of 2 MiB, and a `blocks` reader every 2 s
            (the soak's load)
  steps     8 C processes flooding STEP_ADVANCE (coalesced by the fast path:
            the ring never fills, so it never raises the Python thread)

Readers, each a thread reading every 0.25 s, one after another:
  model_stats   the model's view (applies every command answered before it)
  metrics       the attribute `kvctl top` reads (Prometheus text, the model's
                counters read in process)
  scrape        GET /metrics on the --metrics endpoint (another thread's
                call into the daemon's loop)
  telemetry     the driver's view (no model in it)

A row: reads, median, p99 and max in ms.  The target: max <= 100 ms for
the model's views, the metrics and the scrape, under every load.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.request

from _common import Report, build_c, daemon, scratch

BLOCKS = 100_000
READERS = ("model_stats", "metrics", "scrape", "telemetry")
TARGET_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Reads(threading.Thread):
    """Reads one thing every ``period`` s until stopped; keeps every time."""

    def __init__(self, read, period: float):
        super().__init__(daemon=True)
        self.read, self.period = read, period
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            t0 = time.monotonic()
            self.read()
            self.times.append(time.monotonic() - t0)


def read_whole(path):
    def read() -> None:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    return read


def scrape(port: int):
    def read() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            r.read()
    return read


def load(kind: str, bin_, node, seconds: float) -> list[subprocess.Popen]:
    if kind == "mixed":
        return [subprocess.Popen([str(bin_), str(node), "mixed", str(seconds), str(BLOCKS), str(s)],
                                 stdout=subprocess.DEVNULL) for s in (1, 2)]
    if kind == "steps":
        return [subprocess.Popen([str(bin_), str(node), "flood", str(seconds)], stdout=subprocess.DEVNULL)
                for _ in range(8)]
    return []


def run_load(kind: str, bin_, tmp, seconds: float) -> dict[str, list[float]]:
    port = free_port()
    with daemon(f"kvviews{os.getpid()}{kind}", tmp / kind, extra=("--metrics", f"127.0.0.1:{port}")) as d:
        attrs = d["attr_dir"]
        readers = {name: Reads(scrape(port) if name == "scrape" else read_whole(attrs / name), 0.25)
                   for name in READERS}
        blocks = Reads(read_whole(attrs / "blocks"), 2.0) if kind == "mixed" else None
        procs = load(kind, bin_, d["node"], seconds)
        time.sleep(0.5)  # the load under way
        for r in readers.values():
            r.start()
            time.sleep(0.25 / len(readers))  # one after another, not all at once
        if blocks is not None:
            blocks.start()
        if procs:
            for p in procs:
                p.wait()
        else:
            time.sleep(seconds)
        for r in [*readers.values(), *([blocks] if blocks else [])]:
            r.stop.set()
            r.join()
    return {name: r.times for name, r in readers.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30, help="each load's length")
    args = ap.parse_args()
    report = Report("bench_views: what users read while the device is flooded (one run)")
    with scratch() as tmp:
        bin_ = build_c("ioctl_load.c", tmp)
        for kind in ("idle", "mixed", "steps"):
            times = run_load(kind, bin_, tmp, args.seconds)
            for name in READERS:
                t = sorted(times[name])
                if not t:
                    report.add(f"{kind}: {name}", "no read finished", "", False)
                    continue
                p99 = t[min(len(t) - 1, int(len(t) * 0.99))]
                targeted = name != "telemetry"
                report.add(f"{kind}: {name} ms (reads | median | p99 | max)",
                           f"{len(t)} | {statistics.median(t) * 1e3:.1f} | {p99 * 1e3:.1f} | {t[-1] * 1e3:.1f}",
                           "max <= 100 ms" if targeted else "", t[-1] <= TARGET_S if targeted else None)
    return report.finish()


if __name__ == "__main__":
    raise SystemExit(main())
