"""Helpers for the evaluation tests: small synthetic traces and the path of
the shipped trace (used only as a slice of its first requests)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from kvcpu_dev.evaluation.traces import Request, Trace

SHIPPED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"


def synthetic(n: int = 200, seed: int = 7) -> Trace:
    """Multi-turn conversations with a shared system prompt: each turn's
    prompt is the previous turn's blocks plus a few new ones."""
    rng = random.Random(seed)
    next_id = 1000
    convs: list[list[int]] = []
    reqs = []
    for i in range(n):
        if not convs or rng.random() < 0.3:
            convs.append([0, 1])
        c = rng.randrange(len(convs))
        new = list(range(next_id, next_id + rng.randint(1, 4)))
        next_id += len(new)
        convs[c] = convs[c] + new
        reqs.append(Request(timestamp_ms=i * 250.0, input_length=512 * len(convs[c]),
                            output_length=rng.randint(5, 60), hash_ids=tuple(convs[c])))
    return Trace("synthetic", reqs)


def write_jsonl(path: Path, trace: Trace) -> Path:
    with open(path, "w") as f:
        for r in trace.requests:
            f.write(json.dumps({"timestamp": r.timestamp_ms, "input_length": r.input_length,
                                "output_length": r.output_length, "hash_ids": list(r.hash_ids)}) + "\n")
    return path




# -- recordings --------------------------------------------------------------------------


def write_recording(path: Path, commands: list, model_config=None, pid: int = 4242) -> Path:
    """A .kvrec as the daemon writes it, made in-process: each command runs
    on a kvcpu_dev.device.spec.Driver (the driver's state and register writes, no
    model, no daemon) and the recorder writes it.  ``commands``: tuples
    ("HOT"|"SHARE"|"PREFETCH"|"EVICT", va, len[, target]), ("STEP", n),
    ("WEIGHTS", w_r, w_f, w_s, w_d, evict, prefetch), ("RESET",), or
    ("REFUSED", name, va, len): a hint the device refused (EIO, a fault)."""
    import errno
    import os

    from kvcpu_dev.bench import kvrec as fmt
    from kvcpu_dev.bench.recorder import Recorder
    from kvcpu_dev.device import abi
    from kvcpu_dev.device.spec import Driver
    from kvcpu_dev.driver.events import Event
    from kvcpu_dev.model import ModelConfig

    names = {"HOT": abi.KV_CPU_MARK_HOT, "SHARE": abi.KV_CPU_SHARE_PREFIX, "PREFETCH": abi.KV_CPU_PREFETCH,
             "EVICT": abi.KV_CPU_EVICT}
    dev = Driver()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    os.write(fd, fmt.header_bytes({"created_by": "tests/evaluation"}))
    rec = Recorder(fd, path, "kvtest")
    rec.write_mark("start", telemetry=dev.telemetry(), model_config=(model_config or ModelConfig()).to_toml())
    t = 1_000_000
    for seq, c in enumerate(commands, start=1):
        t += 20_000_000
        kind, err, data, fault = fmt.KIND_IOCTL, 0, b"", 0
        before = dev.bar0.seq
        if c[0] == "RESET":
            kind, cmd = fmt.KIND_RESET, 0
        elif c[0] == "STEP":
            cmd, data = abi.KV_CPU_STEP_ADVANCE, abi.STEP_INFO.codec.pack(c[1])
        elif c[0] == "WEIGHTS":
            cmd, data = abi.KV_CPU_SET_WEIGHTS, abi.WEIGHTS_INFO.codec.pack(*c[1:])
        elif c[0] == "REFUSED":
            cmd, data = names[c[1]], abi.BLOCK_INFO.codec.pack(c[2], c[3], 0)
            err, fault = errno.EIO, 1
        else:
            cmd, data = names[c[0]], abi.BLOCK_INFO.codec.pack(c[1], c[2], c[3] if len(c) > 3 else 0)
        if kind == fmt.KIND_IOCTL and not err:
            dev.ioctl(cmd, data)
        writes = tuple(w for w in dev.bar0.trace if w.seq > before)
        rec.command(Event(seq=seq, t_ns=t, kind=kind, cmd=cmd, pid=pid, errno=err, data=data,
                          writes=writes, fault=fault, latency_us=0, service_ns=1000))
    rec.write_mark("stop", events=rec.events, lost=rec.lost)
    rec.close()
    return path
