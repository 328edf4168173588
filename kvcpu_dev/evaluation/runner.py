"""Run policies over capacities on one trace and gather the results in the
shape of ``kvcpu-eval --json``."""

from __future__ import annotations

from . import progress
from .policies import POLICIES, Cache, Options
from .result import Counts
from .traces import Trace

#: Per-policy series in the JSON, one value per capacity.
SERIES = ("hit_ratio", "t1_hit_ratio", "hits", "t1_hits", "evictions", "reloads", "bytes_up", "bytes_down",
          "prefetch_on_time", "prefetch_late", "stall_s")


def parse_capacities(text: str, unique_blocks: int) -> list[int]:
    """"4000,16000" or percentages of the trace's unique blocks ("2%,10%")."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.endswith("%"):
            out.append(max(1, round(float(part[:-1]) / 100 * unique_blocks)))
        else:
            out.append(int(part))
        if out[-1] <= 0:
            raise ValueError(f"capacity must be positive: {part!r}")
    return out


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)} (known: {', '.join(POLICIES)})")
    return names


def series(runs: list[Counts]) -> dict:
    out: dict = {}
    for key in SERIES:
        if key == "t1_hit_ratio":
            out[key] = [c.t1_hits / c.accesses if c.accesses else 0.0 for c in runs]
        else:
            out[key] = [getattr(c, key) for c in runs]
    extras = [c.extra for c in runs]
    if any(extras):
        out["extra"] = extras
    return out


def evaluate(trace: Trace, capacities: list[int], policies: list[str], opts: Options | None = None,
             show_progress: bool | None = None) -> dict:
    opts = opts or Options()
    cache = Cache(trace)
    result: dict = {
        "trace": trace.name,
        "requests": len(trace.requests),
        "accesses": len(trace.accesses),
        "unique_blocks": trace.unique_blocks,
        "capacity_blocks": list(capacities),
        "block_bytes": opts.block_bytes,
        "policies": {},
    }
    with progress.bar(len(policies) * len(capacities), "kvcpu-eval", show_progress) as bar:
        for name in policies:
            runs = []
            for cap in capacities:
                bar.set_postfix_str(f"{name} @ {cap}")
                runs.append(POLICIES[name](cache, cap, opts))
                bar.update()
            result["policies"][name] = series(runs)
    return result
