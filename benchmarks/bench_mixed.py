"""The model keeps up (issue 24): a mixed flood of random STEP / HOT /
EVICT / PREFETCH / SHARE over 100,000 blocks of 2 MiB, against a lossless
kvcpu-dev (the default: a full ring makes the request wait), a lossy one
(--lossy: a full ring drops) and the no-op C libfuse3 server, alternated
round by round in one run.

Run as root:  .venv/bin/python benchmarks/bench_mixed.py [--quick] [--soak S]

Rows, for one client and for two:
  throughput   commands/s, lossless against lossy and against the no-op
               server (median of the rounds, and the worst round's ratio)
  p99          the clients' round trip p99 (every 16th command sampled)
  model        after every kvcpu-dev round: in_sync, events lost, the
               model's hint counters against the driver's, time requests
               waited for room
  view         model_stats read during each round: the slowest read
--soak S: S seconds of two clients with a `blocks` reader every 2 s: RSS
(peak and last), the slowest model_stats read, and the model in sync.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time

from _common import Report, build_c, daemon, noop_server, scratch

BLOCKS = 100_000


def keyvals(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Reader(threading.Thread):
    """Reads an attribute every ``period`` s while the flood lasts; keeps
    the slowest read."""

    def __init__(self, path, period: float):
        super().__init__(daemon=True)
        self.path, self.period = path, period
        self.slowest, self.reads = 0.0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            t0 = time.monotonic()
            with open(self.path, "rb") as f:
                while f.read(1 << 20):
                    pass
            self.slowest = max(self.slowest, time.monotonic() - t0)
            self.reads += 1


def flood(load, node, clients: int, seconds: float) -> tuple[float, float]:
    """(commands/s of all clients, the worst client p99 in us)."""
    procs = [subprocess.Popen([str(load), str(node), "mixed", str(seconds), str(BLOCKS), str(seed + 1)],
                              stdout=subprocess.PIPE, text=True) for seed in range(clients)]
    outs = [p.communicate()[0].split() for p in procs]
    total = sum(int(o[0]) for o in outs)
    return total / seconds, max(int(o[7]) for o in outs) / 1000


def run_kvcpu(load, tmp, extra: tuple, clients: int, seconds: float, round_: int) -> dict:
    with daemon(f"kvmix{os.getpid()}{round_}", tmp / f"k{round_}", extra=extra) as d:
        reader = Reader(d["attr_dir"] / "model_stats", 0.25)
        reader.start()
        rate, p99 = flood(load, d["node"], clients, seconds)
        reader.stop.set()
        reader.join()
        stats = keyvals((d["attr_dir"] / "model_stats").read_text())
        ring = keyvals((d["attr_dir"] / "fastpath").read_text())
        tele = keyvals((d["attr_dir"] / "telemetry").read_text())
    exact = (stats["steps"], stats["hint_hot"], stats["hint_evict"], stats["hint_prefetch"], stats["hint_share"]) \
        == (tele["step_count"], tele["hot_count"], tele["evict_count"], tele["prefetch_count"], tele["share_count"])
    return {"rate": rate, "p99": p99, "in_sync": stats["in_sync"], "lost": stats["events_lost"],
            "exact": exact, "stall_s": ring["ring_stall_ns"] / 1e9, "dropped": ring["ring_dropped"],
            "view_s": reader.slowest}


def run_noop(load, noop, tmp, clients: int, seconds: float, round_: int) -> dict:
    mnt = tmp / f"noop{round_}"
    server = noop_server(noop, mnt)
    try:
        rate, p99 = flood(load, mnt / "device", clients, seconds)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL)
        server.wait(timeout=10)
    return {"rate": rate, "p99": p99}


def rows(report: Report, clients: int, results: dict[str, list[dict]]) -> None:
    lossless, lossy, noop = results["lossless"], results["lossy"], results["noop"]
    ratios = [b["rate"] / a["rate"] for a, b in zip(lossless, lossy)]
    floor = [n["rate"] / a["rate"] for a, n in zip(lossless, noop)]
    med = statistics.median
    tag = f"{clients} client{'s' if clients > 1 else ''}"
    report.add(f"{tag}: commands/s lossless | lossy | no-op server",
               f"{med([r['rate'] for r in lossless]):,.0f} | {med([r['rate'] for r in lossy]):,.0f} | "
               f"{med([r['rate'] for r in noop]):,.0f}")
    report.add(f"{tag}: lossy / lossless throughput", f"{med(ratios):.2f}x, worst round {max(ratios):.2f}x",
               "<= 1.5x (moonshot 1.15x)" if clients == 1 else "", med(ratios) <= 1.5 if clients == 1 else None)
    report.add(f"{tag}: no-op server / lossless throughput", f"{med(floor):.2f}x, worst round {max(floor):.2f}x")
    report.add(f"{tag}: p99 us lossless | lossy | no-op",
               f"{med([r['p99'] for r in lossless]):.0f} | {med([r['p99'] for r in lossy]):.0f} | "
               f"{med([r['p99'] for r in noop]):.0f}")
    whole = all(r["in_sync"] == 1 and r["lost"] == 0 and r["exact"] and r["dropped"] == 0 for r in lossless)
    report.add(f"{tag}: lossless model saw every command", "yes" if whole else "NO", "every round", whole)
    report.add(f"{tag}: lossless requests waited for room", f"{med([r['stall_s'] for r in lossless]):.2f} s a round")
    report.add(f"{tag}: lossy commands dropped", f"{med([r['dropped'] for r in lossy]):,.0f} a round "
               f"(model in_sync=0: {all(r['in_sync'] == 0 for r in lossy if r['dropped'])})")
    slowest = max(r["view_s"] for r in lossless)
    report.add(f"{tag}: slowest model_stats read during a flood", f"{slowest * 1000:.0f} ms", "<= 100 ms",
               slowest <= 0.1)


def soak(report: Report, load, tmp, seconds: float) -> None:
    with daemon(f"kvsoak{os.getpid()}", tmp / "soak") as d:
        blocks = Reader(d["attr_dir"] / "blocks", 2.0)
        view = Reader(d["attr_dir"] / "model_stats", 0.5)
        blocks.start()
        view.start()
        peak = 0.0
        procs = [subprocess.Popen([str(load), str(d["node"]), "mixed", str(seconds), str(BLOCKS), str(s)],
                                  stdout=subprocess.PIPE, text=True) for s in (1, 2)]
        while any(p.poll() is None for p in procs):
            peak = max(peak, rss_mb(d["pid"]))
            time.sleep(1)
        for p in procs:
            p.communicate()
        blocks.stop.set()
        view.stop.set()
        blocks.join()
        view.join()
        last = rss_mb(d["pid"])
        stats = keyvals((d["attr_dir"] / "model_stats").read_text())
        tele = keyvals((d["attr_dir"] / "telemetry").read_text())
    commands = sum(tele[k] for k in ("step_count", "hot_count", "evict_count", "prefetch_count", "share_count"))
    report.add(f"soak {seconds:.0f} s, 2 clients + blocks reader: RSS peak | after", f"{peak:.0f} | {last:.0f} MB",
               "< 100 MB", peak < 100)
    report.add("soak: commands, model in sync, events lost",
               f"{commands:,}, in_sync={stats['in_sync']}, lost={stats['events_lost']}", "in sync, 0 lost",
               stats["in_sync"] == 1 and stats["events_lost"] == 0)
    report.add("soak: slowest model_stats | blocks read", f"{view.slowest * 1000:.0f} | {blocks.slowest * 1000:.0f} ms "
               f"({view.reads} | {blocks.reads} reads)", "model_stats <= 100 ms", view.slowest <= 0.1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s rounds, 2 rounds a server")
    ap.add_argument("--soak", type=float, default=0, metavar="S", help="also soak S seconds")
    ap.add_argument("--soak-only", action="store_true", help="no flood rounds, only the soak")
    args = ap.parse_args()
    seconds, rounds = (2.0, 2) if args.quick else (5.0, 4)
    report = Report("bench_mixed: a mixed flood, lossless vs lossy vs the no-op C server (same run)")
    with scratch() as tmp:
        load = build_c("ioctl_load.c", tmp)
        noop = build_c("noop_fuse.c", tmp, fuse=True)
        for clients in () if args.soak_only else (1, 2):
            results: dict[str, list[dict]] = {"lossless": [], "lossy": [], "noop": []}
            order = ["lossless", "lossy", "noop"]
            for r in range(rounds):
                for name in (order if r % 2 == 0 else order[::-1]):  # ABC CBA ...
                    if name == "noop":
                        results[name].append(run_noop(load, noop, tmp, clients, seconds, r))
                    else:
                        extra = ("--lossy",) if name == "lossy" else ()
                        results[name].append(run_kvcpu(load, tmp, extra, clients, seconds, r))
            rows(report, clients, results)
        if args.soak:
            soak(report, load, tmp, args.soak)
    return report.finish()


if __name__ == "__main__":
    raise SystemExit(main())
