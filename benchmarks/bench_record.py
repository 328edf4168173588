"""The bench's costs: the round trip with recording on vs off, and
``kvctl replay --speed max`` throughput.

Run as root:  .venv/bin/python benchmarks/bench_record.py [--count N] [--rounds R]

Recording on and off are alternated round by round on one daemon (``kvctl
record start`` appends to the same file, ``stop``), so the machine's noise
hits both alike; the figure is the ratio of the medians of the per-round
median round trips.  Placement as bench_node.py's "apart": the daemon on
the last CPU, the client on the first.  Replay: the recording made here
(every ``on`` round's STEPs, several sessions: not checkable, since the
``off`` rounds' STEPs are missing from it) replayed with ``--speed max``
against a fresh daemon; commands per second as kvctl reports them, which includes
its per-command Python cost.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from _common import Report, build_c, client_us, daemon, median, pinned, scratch, set_affinity

KVCTL = os.path.join(os.path.dirname(sys.executable), "kvctl")


def rtt(client, node, count: int, cpu) -> float:
    return client_us(pinned(cpu, [client, node, count, "step"]))[1]  # the median


def kvctl(node, *args) -> str:
    return subprocess.run([KVCTL, "--device", str(node), *map(str, args)], check=True,
                          capture_output=True, text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000, help="ioctls per round")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    last = ncpu - 1
    server_cpus, cpu = ({last}, 0) if ncpu > 1 else ({0}, None)
    report = Report("recording and replay")
    with scratch() as tmp:
        os.chmod(tmp, 0o755)
        client = build_c("ioctl_rtt.c", tmp)
        rec = tmp / "bench.kvrec"
        with daemon("kvbrec0", tmp / "a") as d:
            set_affinity(d["pid"], server_cpus)
            node = d["node"]
            rtt(client, node, 500, cpu)  # warm up
            on, off = [], []
            for r in range(args.rounds):
                for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    if state == "on":
                        kvctl(node, "record", "start", rec)
                        on.append(rtt(client, node, args.count, cpu))
                        kvctl(node, "record", "stop")
                    else:
                        off.append(rtt(client, node, args.count, cpu))
            lost = kvctl(node, "record")
        ratio = median(on) / median(off)
        report.add("round trip, recording off (median of round medians)", f"{median(off):.1f} us")
        report.add("round trip, recording on", f"{median(on):.1f} us")
        report.add("recording on / off", f"{ratio:.3f}x", "<= 1.05x", ratio <= 1.05)
        report.add("recorder state after the last round", lost.strip().replace("\n", " "))
        with daemon("kvbrec1", tmp / "b") as d:
            set_affinity(d["pid"], server_cpus)
            out = subprocess.run(pinned(cpu, [KVCTL, "--device", d["node"], "replay", rec,
                                              "--speed", "max"]),
                                 capture_output=True, text=True)
            line = (out.stdout or out.stderr).strip()
            m = re.search(r"replayed (\d+) commands in ([\d.]+) s \((\d+)/s\)", line)
            if out.returncode == 0 and m:
                report.add("replay --speed max", f"{m.group(3)} commands/s "
                           f"({m.group(1)} in {m.group(2)} s)")
            else:
                report.add("replay --speed max", line, ok=False)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
