"""In-process cost of one command in the device core (no transport).

Run:  .venv/bin/python benchmarks/bench_core.py

Each figure is the median over batches of the per-call time of a batch.
"""

from __future__ import annotations

import sys
import timeit

from _common import Report, median

from kvcpu_dev.device import abi
from kvcpu_dev.device.spec import Driver

BATCH = 2000
BATCHES = 30
TARGET_US = 5.0


def per_call_us(fn) -> float:
    times = timeit.repeat(fn, number=BATCH, repeat=BATCHES)
    return median(times) / BATCH * 1e6


def main() -> int:
    report = Report("device core, in-process, per command (median)")
    bench(Driver(), report, "", targeted=True)
    # The same with the device model behind BAR0 (its own targets are in
    # bench_model.py): what a command costs the live daemon.
    from kvcpu_dev.model import DeviceModel

    bench(Driver(model=DeviceModel()), report, " + model", targeted=False)
    return report.finish()


def bench(dev: Driver, report: Report, label: str, targeted: bool) -> None:
    step = abi.STEP_INFO.codec.pack(128)
    block = abi.BLOCK_INFO.codec.pack(0x7F00_0000_0000, 2 << 20, 0)
    weights = abi.WEIGHTS_INFO.codec.pack(1, 1, 2, 200, 4096, 57344)
    cases = {
        "STEP_ADVANCE": (abi.KV_CPU_STEP_ADVANCE, step, targeted),
        "MARK_HOT": (abi.KV_CPU_MARK_HOT, block, targeted),
        "PREFETCH": (abi.KV_CPU_PREFETCH, block, False),
        "SET_WEIGHTS": (abi.KV_CPU_SET_WEIGHTS, weights, False),
        "GET_TELEMETRY": (abi.KV_CPU_GET_TELEMETRY, b"", False),
    }
    for name, (cmd, payload, target) in cases.items():
        us = per_call_us(lambda cmd=cmd, payload=payload: dev.ioctl(cmd, payload))
        report.add(name + label, f"{us:.2f} us", f"<= {TARGET_US:g} us" if target else "",
                   us <= TARGET_US if target else None)


if __name__ == "__main__":
    sys.exit(main())
