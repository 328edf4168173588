"""Run policies over capacities on one trace and gather the results in the
shape of ``kvcpu-eval --json``."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from . import progress
from .policies import POLICIES, Cache, Options
from .result import Counts, EvalResult, Series
from .traces import Trace

J = TypeVar("J")
R = TypeVar("R")
A = TypeVar("A")

#: Per-policy series in the JSON, one value per capacity.
SERIES = ("hit_ratio", "t1_hit_ratio", "hits", "t1_hits", "evictions", "reloads", "bytes_up", "bytes_down",
          "prefetch_on_time", "prefetch_late", "stall_s")


#: The largest capacity taken, in blocks (2^40: a policy's cache is a
#: Python dict, and more blocks than any trace holds change nothing).
MAX_CAPACITY = 2**40


def parse_capacities(text: str, unique_blocks: int) -> list[int]:
    """"4000,16000" or percentages of the trace's unique blocks ("2%,10%");
    ValueError (one line) for anything else, 0, nan, inf or past MAX_CAPACITY."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if part.endswith("%"):
                share = float(part[:-1])
                if not math.isfinite(share) or share <= 0:
                    raise ValueError
                cap = max(1, round(min(share, 1e6) / 100 * unique_blocks))
            elif part.isascii() and part.isdigit() and len(part) <= 15:
                cap = int(part)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"capacity must be N blocks or N% of the unique blocks, got {part[:40]!r}") from None
        if not 0 < cap <= MAX_CAPACITY:
            raise ValueError(f"capacity must be from 1 to {MAX_CAPACITY} blocks: {part!r}")
        out.append(cap)
    return out


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)} (known: {', '.join(POLICIES)})")
    return names


def series(runs: list[Counts]) -> Series:
    out: Series = {}
    for key in SERIES:
        if key == "t1_hit_ratio":
            out[key] = [c.t1_hits / c.accesses if c.accesses else 0.0 for c in runs]
        else:
            out[key] = [getattr(c, key) for c in runs]
    extras = [c.extra for c in runs]
    if any(extras):
        out["extra"] = extras
    return out


_CACHE: Cache | None = None  # inherited by worker processes


def map_jobs(fn: Callable[[J], R], work: list[J], jobs: int, init: Callable[[A], None], arg: A,
             title: str, show_progress: bool | None) -> list[R]:
    """``fn`` over ``work`` in order, in this process (jobs <= 1) or in a
    pool of ``jobs`` processes, each set up once by ``init(arg)``; one
    progress bar either way."""
    out: list[R] = []
    with progress.bar(len(work), title, show_progress) as bar:
        if jobs <= 1:
            init(arg)
            for job in work:
                out.append(fn(job))
                bar.update()
        else:
            with ProcessPoolExecutor(jobs, initializer=init, initargs=(arg,)) as pool:
                for r in pool.map(fn, work):
                    out.append(r)
                    bar.update()
    return out


def _init(cache: Cache) -> None:
    global _CACHE
    _CACHE = cache


def _run(job: tuple[str, int, Options]) -> Counts:
    name, cap, opts = job
    assert _CACHE is not None
    return POLICIES[name](_CACHE, cap, opts)


def evaluate(trace: Trace, capacities: list[int], policies: list[str], opts: Options | None = None,
             show_progress: bool | None = None, jobs: int = 1) -> EvalResult:
    """Every policy at every capacity; ``jobs`` > 1 runs them in that many
    processes (the results do not depend on it)."""
    opts = opts or Options()
    cache = Cache(trace)
    result: EvalResult = {
        "trace": trace.name,
        "requests": len(trace.requests),
        "accesses": len(trace.accesses),
        "unique_blocks": trace.unique_blocks,
        "capacity_blocks": list(capacities),
        "block_bytes": opts.block_bytes,
        "policies": {},
    }
    work = [(name, cap, opts) for name in policies for cap in capacities]
    done = map_jobs(_run, work, jobs, _init, cache, "kvcpu-eval", show_progress)
    k = len(capacities)
    for i, name in enumerate(policies):
        result["policies"][name] = series(done[i * k:(i + 1) * k])
    return result
