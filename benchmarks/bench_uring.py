"""The device file over FUSE io_uring (issue 21), every placement, in one
run: kvcpu-dev --transport uring against the no-op C libfuse3 server on
classic /dev/fuse (noop_fuse.c) and against a no-op server of the io_uring
protocol (noop_uring.c, its floor), with kvcpu-dev on classic /dev/fuse
beside them for the transports' table.  Servers alternate in mirrored
order batch by batch (A B C D D C B A), each row reports the ratio of
medians and the worst batch.

Run as root:  .venv/bin/python benchmarks/bench_uring.py [--quick] [--batches N]

Rows:
  same CPU      client and classic servers on the last CPU; the io_uring
                servers answer it on that CPU's queue
  cross-CPU     classic servers on the last CPU, the client on the first
                (io_uring has no cross-CPU placement: a caller's queue is
                its own CPU's)
  unpinned      back to back, 32 placements a batch; and a STEP every 2 ms,
                4 placements a batch
  load          8 processes flooding STEPs, nothing pinned
  isolation     STEP p99 at a 2 ms cadence while a process reads `blocks`
                of a full directory in a loop, against the same without it
  burst         1,000 MARK_HOT then a STEP, cross-CPU placement
  idle          CPU time of an idle io_uring daemon over 3 s (no polling:
                zero), idle RSS and start-up, io_uring against classic
The fuse module's enable_uring is switched on for the run and put back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from _common import (
    ROOT,
    Report,
    build_c,
    client_us,
    daemon,
    noop_server,
    p99_beside_blocks_reader,
    pinned,
    scratch,
    set_affinity,
)

ENABLE_URING = pathlib.Path("/sys/module/fuse/parameters/enable_uring")
MARK_HOT = 0x40184B02


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_ticks(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        fields = open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


@contextlib.contextmanager
def uring_enabled() -> Iterator[None]:
    before = ENABLE_URING.read_text().strip()
    ENABLE_URING.write_text("Y\n")
    try:
        yield
    finally:
        ENABLE_URING.write_text(before + "\n")


@contextlib.contextmanager
def noop_uring(binary: pathlib.Path, mountpoint: pathlib.Path) -> Iterator[subprocess.Popen]:
    """The io_uring floor, in a session of its own as noop_server starts its
    classic twin; its mount point is a regular file (it creates it)."""
    mountpoint.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(binary), str(mountpoint)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("noop_uring did not start")
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        subprocess.run(["umount", "-l", str(mountpoint)], stderr=subprocess.DEVNULL)


class Bench:
    def __init__(self, tmp: pathlib.Path, report: Report, batches: int):
        self.tmp, self.report, self.batches = tmp, report, batches
        self.rtt = build_c("ioctl_rtt.c", tmp)
        self.load = build_c("ioctl_load.c", tmp)
        ncpu = os.cpu_count() or 1
        self.all, self.last = set(range(ncpu)), ncpu - 1
        #: name -> (node, pids to pin for a classic placement, or () for an io_uring server)
        self.servers: dict[str, tuple[pathlib.Path, list[int]]] = {}

    def pin_classic(self, cpus: set[int]) -> None:
        for _, pids in self.servers.values():
            for pid in pids:
                set_affinity(pid, cpus)

    def runs(self, client: int | None, count: int, interval_us: int, placements: int) -> dict[str, list[float]]:
        """Batches of mirrored rounds: each server's mean of run medians a batch."""
        names = list(self.servers)
        out: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(self.batches):
            got: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(placements):
                for name in names + names[::-1]:
                    node = self.servers[name][0]
                    got[name].append(client_us(pinned(client, [self.rtt, node, count, "step", interval_us]))[1])
            for name in names:
                out[name].append(statistics.mean(got[name]))
        return out

    def row(self, what: str, res: dict[str, list[float]], moonshot: float | None = None) -> None:
        med = {n: statistics.median(v) for n, v in res.items()}
        ours, classic, floor = res["kvcpu uring"], res["no-op classic"], res["no-op uring"]
        vs_classic = [a / b for a, b in zip(ours, classic)]
        vs_floor = [a / b for a, b in zip(ours, floor)]
        r_classic = med["kvcpu uring"] / med["no-op classic"]
        r_floor = med["kvcpu uring"] / med["no-op uring"]
        figures = ", ".join(f"{n} {v:.1f}" for n, v in med.items())
        self.report.add(f"{what}: medians us", figures)
        self.report.add("  kvcpu uring / no-op classic", f"{r_classic:.2f}x, worst batch {max(vs_classic):.2f}x",
                        "<= 1.0x, worst <= 1.15x", r_classic <= 1.0 and max(vs_classic) <= 1.15)
        self.report.add("  kvcpu uring / no-op uring (its floor)", f"{r_floor:.2f}x, worst batch {max(vs_floor):.2f}x",
                        "<= 1.15x", r_floor <= 1.15)
        if "kvcpu classic" in res:
            vs = [a / b for a, b in zip(res["kvcpu classic"], classic)]
            self.report.add("  kvcpu classic / no-op classic", f"{med['kvcpu classic'] / med['no-op classic']:.2f}x, "
                            f"worst batch {max(vs):.2f}x")
        if moonshot is not None:
            self.report.add("  moonshot", f"{r_classic:.2f}x of the classic no-op server", f"<= {moonshot}x",
                            r_classic <= moonshot)

    def flood(self, node: pathlib.Path, seconds: float) -> int:
        procs = [subprocess.Popen([str(self.load), str(node), "flood", str(seconds)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        return sum(int(p.communicate()[0]) for p in procs)


def placements(b: Bench, quick: bool) -> None:
    if b.last > 0:
        b.pin_classic({b.last})
        b.row("same CPU, back to back", b.runs(b.last, 5000, 0, 1))
        b.row("cross-CPU, back to back", b.runs(0, 5000, 0, 1))
    b.pin_classic(b.all)
    b.row("unpinned, back to back", b.runs(None, 1000, 0, 8 if quick else 32), moonshot=0.5)
    b.row("unpinned, a STEP every 2 ms", b.runs(None, 250, 2000, 2 if quick else 4))


def load(b: Bench, seconds: float) -> None:
    rates: dict[str, list[float]] = {n: [] for n in b.servers}
    rounds = 2
    for _ in range(rounds):
        for name in list(b.servers) + list(b.servers)[::-1]:
            rates[name].append(b.flood(b.servers[name][0], seconds / rounds / 2) / (seconds / rounds / 2))
    total = {n: sum(v) / len(v) for n, v in rates.items()}
    b.report.add("8 processes flooding STEPs, unpinned: ioctls/s", ", ".join(f"{n} {v:,.0f}" for n, v in total.items()))
    ratio = total["no-op classic"] / total["kvcpu uring"]
    b.report.add("  kvcpu uring slower than no-op classic by", f"{ratio:.2f}x", "<= 1.0x", ratio <= 1.0)
    ratio_floor = total["no-op uring"] / total["kvcpu uring"]
    b.report.add("  kvcpu uring slower than no-op uring by", f"{ratio_floor:.2f}x", "<= 1.15x", ratio_floor <= 1.15)


def isolation(b: Bench, node: pathlib.Path, attr_dir: pathlib.Path) -> None:
    quiet, loud, worst = p99_beside_blocks_reader(b.rtt, node, attr_dir / "blocks", b.batches)
    ratio = loud / quiet
    b.report.add("kvcpu uring: STEP p99 with a blocks reader (full directory)",
                 f"{loud:.1f} us vs {quiet:.1f} us alone = {ratio:.2f}x; "
                 f"worst batch {worst:.2f}x", "<= 1.5x", ratio <= 1.5)


def burst(b: Bench) -> None:
    if b.last == 0:
        return
    b.pin_classic({b.last})
    times: dict[str, list[float]] = {n: [] for n in b.servers}
    for _ in range(3):
        for name in list(b.servers) + list(b.servers)[::-1]:
            times[name].append(client_us(pinned(0, [b.load, b.servers[name][0], "burst", 100, 1000, 1000]))[1])
    med = {n: statistics.median(v) / 1000 for n, v in times.items()}
    b.report.add("burst of 1,000 MARK_HOT + STEP, client on CPU 0: ms", ", ".join(f"{n} {v:.2f}" for n, v in med.items()))
    r = med["kvcpu uring"] / med["no-op classic"]
    b.report.add("  kvcpu uring / no-op classic", f"{r:.2f}x", "<= 1.0x", r <= 1.0)
    b.pin_classic(b.all)


def idle(b: Bench) -> None:
    starts: dict[str, list[float]] = {"uring": [], "fuse": []}
    rss: dict[str, list[float]] = {"uring": [], "fuse": []}
    ticks = []
    for i in range(3):
        for transport in ("uring", "fuse"):
            with daemon(f"kvidle{transport}{i}", b.tmp / f"idle{transport}{i}", extra=("--transport", transport)) as d:
                starts[transport].append(d["start_s"] * 1000)
                time.sleep(1.0)
                rss[transport].append(rss_mb(d["pid"]))
                if transport == "uring":
                    t0 = cpu_ticks(d["pid"])
                    time.sleep(3.0)
                    ticks.append(cpu_ticks(d["pid"]) - t0)
    b.report.add("idle io_uring daemon: CPU ticks over 3 s", f"{ticks} (1 tick = 10 ms)", "0 (no polling)",
                 max(ticks) <= 1)
    for what, data in (("idle RSS, MB", rss), ("start-up until the node answers, ms", starts)):
        b.report.add(f"{what}: uring | classic",
                     f"{statistics.median(data['uring']):.1f} | {statistics.median(data['fuse']):.1f} "
                     f"(worst {max(data['uring']):.1f} | {max(data['fuse']):.1f})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 batches, fewer placements, 6 s of load")
    ap.add_argument("--batches", type=int, default=None)
    args = ap.parse_args()
    if not ENABLE_URING.exists():
        print(f"bench_uring: this kernel has no FUSE over io_uring ({ENABLE_URING} is missing)")
        return 0
    batches = args.batches or (3 if args.quick else 5)
    report = Report("bench_uring: kvcpu-dev over FUSE io_uring against the no-op servers (same run)")
    with scratch() as tmp, uring_enabled():
        b = Bench(tmp, report, batches)
        noop = build_c("noop_fuse.c", tmp, fuse=True)
        ring_bin = tmp / "noop_uring"
        subprocess.run(["gcc", "-O2", "-Wall", "-I", str(ROOT / "kvcpu_dev" / "native"), "-o", str(ring_bin),
                        str(ROOT / "benchmarks" / "noop_uring.c")], check=True)
        classic = noop_server(noop, tmp / "noop")
        try:
            with noop_uring(ring_bin, tmp / "ring" / "device") as ring, \
                    daemon("kvuring0", tmp / "u", extra=("--transport", "uring")) as ours, \
                    daemon("kvclassic0", tmp / "c", extra=("--transport", "fuse")) as ours_classic:
                b.servers = {
                    "no-op classic": (tmp / "noop" / "device", [classic.pid]),
                    "kvcpu uring": (ours["node"], []),
                    "no-op uring": (tmp / "ring" / "device", []),
                    "kvcpu classic": (ours_classic["node"], [ours_classic["pid"]]),
                }
                del ring
                placements(b, args.quick)
                load(b, 6.0 if args.quick else 30.0)
                burst(b)
            with daemon("kvuring1", tmp / "i", extra=("--transport", "uring", "--set", "entries=65536")) as d:
                subprocess.run([sys.executable, "-c", (
                    "import fcntl, os, struct, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
                    f"fcntl.ioctl(fd, {MARK_HOT}, struct.pack('<3Q', 0, 65536 << 21, 0))"), str(d["node"])], check=True)
                isolation(b, d["node"], d["attr_dir"])
            idle(b)
        finally:
            subprocess.run(["umount", "-l", str(tmp / "noop")], stderr=subprocess.DEVNULL)
            classic.terminate()
            classic.wait()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
