"""STEP latency through the node with the device model busy: a STEP every
2 ms, first with an empty block directory, then with all 65,536 entries
live.  The scan a STEP triggers runs after the reply (off the ioctl's
critical path, as on silicon), so the latency must not grow with the
directory.

Run as root:  .venv/bin/python benchmarks/bench_model_node.py [--count N]
"""

from __future__ import annotations

import argparse
import sys

from _common import Report, build_c, client_us, daemon, scratch

from kvcpu_dev.client import KvCpu

ENTRIES = 65536
BLOCK = 2 << 20  # the model's default block size
INTERVAL_US = 2000


def paced_steps(client, node, count: int) -> list[float]:
    """(p25, median, p75, p99, max) in microseconds."""
    return client_us([client, node, count, "step", INTERVAL_US])


def live_entries(attr_dir) -> int:
    for line in (attr_dir / "model_stats").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "live_entries":
            return int(value)
    raise RuntimeError("model_stats has no live_entries")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000, help="STEPs per phase")
    args = ap.parse_args()
    report = Report(f"STEP every {INTERVAL_US / 1000:g} ms through the node, device model on")
    with scratch() as tmp:
        client = build_c("ioctl_rtt.c", tmp)
        with daemon("kvbm0", tmp) as d:
            empty = paced_steps(client, d["node"], args.count)
            with KvCpu(d["node"]) as dev:  # one hint spanning every entry
                dev.mark_hot(0, ENTRIES * BLOCK)
            full_count = live_entries(d["attr_dir"])
            paced_steps(client, d["node"], 100)  # past the first mass demotion
            full = paced_steps(client, d["node"], args.count)
            assert live_entries(d["attr_dir"]) == full_count
    ratio = full[1] / empty[1]
    fmt = "median {1:.1f} us, p99 {3:.1f} us, max {4:.1f} us"
    report.add("empty directory", fmt.format(*empty))
    report.add(f"{full_count} live entries", fmt.format(*full))
    report.add("full / empty median", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5 and full_count == ENTRIES)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
