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


