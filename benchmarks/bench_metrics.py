"""The --metrics endpoint under load (issue 23: 9): a STEP client's p99 at
a decode loop's 2 ms cadence with and without a scrape flood on the
daemon's endpoint, side by side; and what the flood finds (connect time of
a burst, threads, RSS).

Run as root:  .venv/bin/python benchmarks/bench_metrics.py [--batches N] [--rate R]

The flood: ``--scrapers`` processes scraping /metrics ``--rate`` times a
second in all (Prometheus scrapes once per 15 s), half of them on
keep-alive connections and half on a new connection per scrape, each a
raw socket loop (the least client CPU a scrape costs), plus 300 idle
connections held open.

Each batch measures 2,500 STEPs every 2 ms (benchmarks/ioctl_rtt.c) in
four conditions, in the order ABCD and then DCBA so the machine's drift
hits each alike, on one daemon, nothing pinned:

  quiet     no flood
  endpoint  the flood on the daemon's endpoint
  elsewhere the same flood on the same server code in another process,
            serving the daemon's text: what the flood's clients and the
            kernel's work for their connections cost the STEP client,
            whoever serves them
  again     no flood: with ``quiet``, an A/A control of what the run can
            resolve on a shared machine

A figure is the ratio of the batches' median p99s, with the worst batch's
ratio.  The target: endpoint / quiet <= 1.5x.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from _common import Report, build_c, client_us, daemon, scratch

SCRAPER = r"""
import socket, sys, time
host, port, seconds, rate, fresh = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"
done, start = 0, time.monotonic()
end = start + seconds
s = socket.create_connection((host, port))
buf = b""
while time.monotonic() < end:
    if rate:
        time.sleep(max(0.0, start + done / rate - time.monotonic()))
    if fresh and done:
        s.close()
        s, buf = socket.create_connection((host, port)), b""
    s.sendall(request)
    while True:
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                buf = body[length:]
                break
        chunk = s.recv(1 << 16)
        if not chunk:
            s = socket.create_connection((host, port))
            buf = b""
            s.sendall(request)
            continue
        buf += chunk
    done += 1
print(done)
"""

#: The same server code in a process of its own, serving a fixed text.
ELSEWHERE = r"""
import sys
from kvcpu_dev.bench.httpd import MetricsServer
body = open(sys.argv[2], "rb").read()
server = MetricsServer("127.0.0.1", int(sys.argv[1]), lambda: body)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.close()
"""


def tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def burst(port: int, n: int = 500) -> float:
    """Seconds until ``n`` connections are all established, then closed."""
    t0 = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    took = time.monotonic() - t0
    for s in socks:
        s.close()
    return took


def ratio_row(report: Report, what: str, loud: list[float], quiet: list[float], target: bool) -> None:
    ratio = statistics.median(loud) / statistics.median(quiet)
    worst = max(lo / q for lo, q in zip(loud, quiet))
    report.add(what, f"{statistics.median(loud):.1f} us vs {statistics.median(quiet):.1f} us = {ratio:.2f}x; "
                     f"worst batch {worst:.2f}x", "<= 1.5x" if target else "reported", ratio <= 1.5 if target else None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--scrapers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=500.0, help="scrapes per second in all (0: back to back)")
    ap.add_argument("--count", type=int, default=2500, help="STEPs per batch, one every 2 ms")
    args = ap.parse_args()
    report = Report("the --metrics endpoint under a scrape flood")
    with scratch() as tmp:
        os.chmod(tmp, 0o755)
        rtt = build_c("ioctl_rtt.c", tmp)
        port, other = free_port(), free_port()
        with daemon("kvbmet0", tmp / "d", extra=("--metrics", f"127.0.0.1:{port}")) as d:
            node, pid = d["node"], d["pid"]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            (tmp / "text").write_bytes(text)
            elsewhere = subprocess.Popen([sys.executable, "-c", ELSEWHERE, str(other), str(tmp / "text")],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            elsewhere.stdout.readline()
            try:
                client_us([rtt, node, 200, "step", 2000])  # warm up
                base_tasks, base_rss = tasks(pid), rss_mb(pid)
                peak_tasks, peak_rss = base_tasks, base_rss
                p99: dict[str, list[float]] = {k: [] for k in ("quiet", "endpoint", "elsewhere", "again")}
                scrapes: list[int] = []
                seconds = args.count * 0.002 + 1.0
                order = tuple(p99)
                for batch in range(args.batches):
                    for condition in (order if batch % 2 == 0 else order[::-1]):
                        if condition in ("quiet", "again"):
                            p99[condition].append(client_us([rtt, node, args.count, "step", 2000])[3])
                            continue
                        target = port if condition == "endpoint" else other
                        idle = [socket.create_connection(("127.0.0.1", target)) for _ in range(300)]
                        flood = [subprocess.Popen([sys.executable, "-c", SCRAPER, "127.0.0.1", str(target),
                                                   str(seconds), str(args.rate / args.scrapers), str(i % 2)],
                                                  stdout=subprocess.PIPE, text=True) for i in range(args.scrapers)]
                        try:
                            time.sleep(0.5)
                            p99[condition].append(client_us([rtt, node, args.count, "step", 2000])[3])
                            if condition == "endpoint":
                                peak_tasks, peak_rss = max(peak_tasks, tasks(pid)), max(peak_rss, rss_mb(pid))
                        finally:
                            done = sum(int(p.communicate()[0] or 0) for p in flood)
                            if condition == "endpoint":
                                scrapes.append(done)
                            for s in idle:
                                s.close()
            finally:
                elsewhere.stdin.close()
                elsewhere.wait()
            connect = burst(port)
        pace = f"{args.rate:.0f}/s asked" if args.rate else "back to back"
        ratio_row(report, "STEP p99, 2 ms cadence: a flood on the daemon's endpoint / none",
                  p99["endpoint"], p99["quiet"], True)
        report.add("  the flood", f"{args.scrapers} scrapers ({pace}) + 300 idle connections: "
                   f"{statistics.median(scrapes) / seconds:.0f} scrapes/s served, {len(text)} bytes each")
        ratio_row(report, "  the same flood on a server in another process / none", p99["elsewhere"], p99["quiet"],
                  False)
        ratio_row(report, "  control: none / none (A/A: the run's resolution)", p99["again"], p99["quiet"], False)
        report.add("  daemon threads, RSS during the flood",
                   f"{peak_tasks} threads (idle: {base_tasks}), {peak_rss:.1f} MB (idle: {base_rss:.1f} MB)",
                   "threads bounded", peak_tasks <= base_tasks)
        report.add("500 concurrent connects", f"{connect:.2f} s", "no SYN retries (< 1 s)", connect < 1.0)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
