"""CUSE against the FUSE fallback: median per-ioctl round trip of the same
daemon through each transport, measured in alternating rounds in one run.

The host kernel has no CUSE, so by default this boots User-Mode Linux
(scripts/uml-run.sh: a real 6.1 kernel with cuse.ko) and runs itself there:

    .venv/bin/python benchmarks/bench_transports.py            # under UML
    .venv/bin/python benchmarks/bench_transports.py --here     # this kernel
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

from _common import ROOT, Report, build_c, client_us, daemon, median, scratch


def rtt(client, node, count: int) -> float:
    return client_us([client, node, count, "step"])[1]  # the median


def measure(count: int, rounds: int) -> int:
    if not os.path.exists("/dev/cuse"):
        print("bench_transports: no /dev/cuse in this kernel; run it without --here (UML)")
        return 1
    report = Report(f"CUSE vs FUSE fallback, kernel {os.uname().release}")
    with scratch() as tmp:
        client = build_c("ioctl_rtt.c", tmp)
        with daemon("kvbc0", tmp / "c", extra=("--transport", "cuse")) as cuse, \
             daemon("kvbf0", tmp / "f", extra=("--transport", "fuse")) as fuse:
            c, f = [], []
            for _ in range(rounds):
                c.append(rtt(client, cuse["node"], count))
                f.append(rtt(client, fuse["node"], count))
    ratio = median(c) / median(f)
    report.add("CUSE round trip", f"{median(c):.1f} us")
    report.add("FUSE fallback round trip", f"{median(f):.1f} us")
    report.add("CUSE / FUSE", f"{ratio:.2f}x")
    return report.finish()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--here", action="store_true", help="measure on this kernel")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.here:
        return measure(args.count, args.rounds)
    venv = pathlib.Path(sys.executable).parent.parent
    cmd = [str(ROOT / "scripts" / "uml-run.sh"), "--timeout", "900", "--venv", str(venv), "--",
           sys.executable, os.path.abspath(__file__), "--here",
           "--count", str(args.count), "--rounds", str(args.rounds)]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode


if __name__ == "__main__":
    sys.exit(main())
