"""Request traces of the Mooncake format: one JSON object per line with
``timestamp`` (ms), ``input_length``, ``output_length`` and ``hash_ids``
(one id per fixed-size token block; equal ids are one shared block).

Every policy is measured on the same access sequence: requests in file
order, each request's hash ids in order.  Nothing here is specific to one
trace file.

A trace is input from anywhere, so reading it is bounded: only a regular
file is read (a FIFO or /dev/zero would be read forever), a line may hold
at most MAX_LINE bytes and a trace at most MAX_ACCESSES accesses, and every
number is checked (hash ids are 0..2^63-1, as numpy's int64 holds them;
times finite; lengths whole and non-negative).  What fails is one line
naming the file and line."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bench.kvrec import open_regular

#: The longest line read (the shipped trace's longest is 2 KiB).
MAX_LINE = 1 << 20
#: The most accesses one evaluation holds: 14x the shipped trace's, about
#: 0.3 GB for Belady's next-use table.
MAX_ACCESSES = 1 << 22
MAX_HASH_ID = 2**63 - 1
MAX_LENGTH = 2**31 - 1


@dataclass(frozen=True)
class Request:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@dataclass
class Trace:
    """Requests in file order, plus the flat access sequence policies replay."""

    name: str
    requests: list[Request]
    accesses: list[int] = field(init=False)  # hash ids, request after request
    offsets: list[int] = field(init=False)  # accesses[offsets[r]:offsets[r+1]] belong to request r

    def __post_init__(self) -> None:
        self.accesses = [h for r in self.requests for h in r.hash_ids]
        self.offsets = np.cumsum([0] + [len(r.hash_ids) for r in self.requests]).tolist()

    @property
    def unique_blocks(self) -> int:
        return len(set(self.accesses))

    def request_of_access(self) -> np.ndarray:
        """The request index of every access."""
        return np.repeat(np.arange(len(self.requests)), np.diff(self.offsets))

    def slice(self, start: int, stop: int, name: str | None = None) -> Trace:
        """Requests [start, stop) as a trace of their own."""
        return Trace(name or f"{self.name}[{start}:{stop}]", self.requests[start:stop])

    def split_by_time(self, train_fraction: float) -> tuple[Trace, Trace]:
        """(training part, held-out part): the requests before and after the
        instant ``train_fraction`` of the way through the trace's time span."""
        if not self.requests:
            return self, self
        t0, t1 = self.requests[0].timestamp_ms, self.requests[-1].timestamp_ms
        cut_t = t0 + train_fraction * (t1 - t0)
        cut = next((i for i, r in enumerate(self.requests) if r.timestamp_ms > cut_t), len(self.requests))
        return self.slice(0, cut, f"{self.name} (train)"), self.slice(cut, len(self.requests), f"{self.name} (held out)")


def _whole(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LENGTH:
        raise ValueError(f"{key} must be a whole number from 0 to {MAX_LENGTH}, got {str(value)[:40]}")
    return value


def parse_request(line: str | bytes, where: str) -> Request:
    try:
        try:
            obj = json.loads(line)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(obj, dict):
            raise ValueError("a request must be a JSON object")
        ids = obj["hash_ids"]
        if not isinstance(ids, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= MAX_HASH_ID for h in ids):
            raise ValueError(f"hash_ids must be a list of integers from 0 to {MAX_HASH_ID}")
        t = obj.get("timestamp", 0)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or abs(t) > 1e18:
            raise ValueError(f"timestamp must be a finite number of milliseconds, got {str(t)[:40]}")
        return Request(float(t), _whole(obj, "input_length"), _whole(obj, "output_length"), tuple(ids))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: {e.__class__.__name__}: {e}") from None


def read_trace(path: str | Path, limit: int | None = None) -> Trace:
    """Read a trace file (blank lines skipped); ``limit`` keeps the first
    requests.  ValueError (one line) for what is not a trace we can hold."""
    path = Path(path)
    requests: list[Request] = []
    accesses = 0
    with os.fdopen(open_regular(path), "rb") as f:
        n = 0
        while limit is None or len(requests) < limit:
            line = f.readline(MAX_LINE + 1)
            if not line:
                break
            n += 1
            if len(line) > MAX_LINE:
                raise ValueError(f"{path}:{n}: a line longer than {MAX_LINE} bytes: not a trace")
            if line.strip():
                request = parse_request(line, f"{path}:{n}")
                accesses += len(request.hash_ids)
                if accesses > MAX_ACCESSES:
                    raise ValueError(f"{path}: more than {MAX_ACCESSES} block accesses by line {n}: "
                                     "take the first requests with --requests N")
                requests.append(request)
    return Trace(path.name, requests)
