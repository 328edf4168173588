"""Request traces of the Mooncake format: one JSON object per line with
``timestamp`` (ms), ``input_length``, ``output_length`` and ``hash_ids``
(one id per fixed-size token block; equal ids are one shared block).

Every policy is measured on the same access sequence: requests in file
order, each request's hash ids in order.  Nothing here is specific to one
trace file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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


def parse_request(line: str, where: str) -> Request:
    try:
        obj = json.loads(line)
        ids = obj["hash_ids"]
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise ValueError("hash_ids must be a list of integers")
        return Request(float(obj.get("timestamp", 0)), int(obj.get("input_length", 0)),
                       int(obj.get("output_length", 0)), tuple(ids))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: {e.__class__.__name__}: {e}") from None


def read_trace(path: str | Path, limit: int | None = None) -> Trace:
    """Read a trace file (blank lines skipped); ``limit`` keeps the first requests."""
    path = Path(path)
    requests: list[Request] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(requests) >= limit:
                break
            if line.strip():
                requests.append(parse_request(line, f"{path}:{n}"))
    return Trace(path.name, requests)
