"""kvcpu-eval --tune: search HEPC's weights, thresholds and the adapter's
step stride and lookahead on the first part of a trace (by time), then
report the best setting, the register defaults and the classic policies on
the held-out rest.

Capacities are shares of each part's unique blocks, so the training and the
held-out part are compared at the same relative cache size.  The search is
a deterministic sample of a small grid (seeded), scored by the mean hit
ratio over the capacities: one setting for every capacity, as a device
ships one set of registers.  The best setting per capacity is reported too,
to show how much a capacity-aware choice would add.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import TypeAlias, cast

from . import runner
from .policies import Options
from .result import EvalResult, Series
from .runtime import Adapter, AdapterConfig, config_for
from .traces import Trace

#: The grid searched.  S (step proximity) is the only recency signal that
#: decays, over 255 STEPs: the stride sets its time scale; the threshold,
#: with w_s = 1, sets how many STEPs a block may sit idle in HBM.
GRID: dict[str, list[int]] = {
    "step_stride": [16, 32, 64, 128, 256],
    "evict_thresh": [60, 120, 170, 200, 225, 245],
    "w_s": [1],
    "w_r": [0, 1],
    "w_f": [0, 1, 4],
    "w_d": [0, 1, 4],
    "prefetch_thresh": [0xE000, 300],
    "lookahead": [0, 8],
}
FIXED = {"scan_interval": 1}

#: One setting tried: AdapterConfig fields by name (all of them, or the
#: ones that differ from the defaults).
Setting: TypeAlias = dict[str, float]

_TRACE: Trace | None = None  # the part being evaluated, inherited by worker processes


def _init(trace: Trace) -> None:
    global _TRACE
    _TRACE = trace


def _hit_ratio(job: tuple[Setting, int, int]) -> tuple[float, float]:
    params, capacity, block_bytes = job
    assert _TRACE is not None
    c = Adapter(_TRACE, capacity, block_bytes, AdapterConfig().replace(**params)).run()
    return c.hit_ratio, c.t1_hits / max(1, c.accesses)


def candidates(budget: int, seed: int = 0) -> list[Setting]:
    """The settings tried: a seeded sample of the grid (always the same)."""
    keys = list(GRID)
    full = [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]
    rng = random.Random(seed)
    sample = rng.sample(full, min(budget, len(full)))
    return [{**FIXED, **p} for p in sample]


def evaluate_settings(trace: Trace, settings: list[Setting], capacities: list[int], block_bytes: int,
                      jobs: int, show_progress: bool | None) -> list[list[float]]:
    """Hit ratio of every setting at every capacity, in parallel processes."""
    work = [(p, cap, block_bytes) for p in settings for cap in capacities]
    out = runner.map_jobs(_hit_ratio, work, jobs, _init, trace, f"tune {trace.name}", show_progress)
    k = len(capacities)
    return [[h for h, _ in out[i * k:(i + 1) * k]] for i in range(len(settings))]


def shares(trace: Trace, percents: list[float]) -> list[int]:
    return [max(1, round(p / 100 * trace.unique_blocks)) for p in percents]


def tune(trace: Trace, capacities: list[int], opts: Options, train_fraction: float = 0.5,
         budget: int = 40, jobs: int = 2, show_progress: bool | None = None) -> EvalResult:
    """Search on the training part; report on the held-out part."""
    train, held = trace.split_by_time(train_fraction)
    percents = [100 * c / trace.unique_blocks for c in capacities]
    settings = [dataclasses.asdict(config_for("default"))] + candidates(budget)
    scores = evaluate_settings(train, settings, shares(train, percents), opts.block_bytes, jobs, show_progress)
    mean = [sum(s) / len(s) for s in scores]
    best = max(range(len(settings)), key=lambda i: (mean[i], -i))
    per_cap = [max(range(len(settings)), key=lambda i: (scores[i][j], -i)) for j in range(len(percents))]
    recommended = {k: v for k, v in settings[best].items() if v != getattr(AdapterConfig(), k)}

    held_caps = shares(held, percents)
    result = runner.evaluate(held, held_caps, ["lru", "arc", "prio-lru", "belady"], opts, show_progress=show_progress)
    again = [settings[0], settings[best]] + [settings[i] for i in per_cap]
    held_scores = evaluate_settings(held, again, held_caps, opts.block_bytes, jobs, show_progress)
    n = len(held_caps)
    for name, ratios in (("hepc-default", held_scores[0]), ("hepc-tuned", held_scores[1]),
                         ("hepc-best-per-capacity", [held_scores[2 + j][j] for j in range(n)])):
        result["policies"][name] = {"hit_ratio": ratios, **_blank(n)}
    result["capacity_asked"] = [f"{round(p, 3):g}%" for p in percents]  # the held-out part's shares
    result["tuning"] = {
        "train": {"trace": train.name, "requests": len(train.requests), "unique_blocks": train.unique_blocks,
                  "capacity_blocks": shares(train, percents)},
        "held_out": {"trace": held.name, "requests": len(held.requests), "unique_blocks": held.unique_blocks},
        "capacity_percent_of_unique": [round(p, 3) for p in percents],
        "settings_tried": len(settings),
        "grid": GRID,
        "recommended": recommended,
        "train_hit_ratio": {"default": scores[0], "recommended": scores[best]},
        "train_ranking": sorted(({"mean": round(mean[i], 5), "setting": _diff(settings[i])} for i in range(len(settings))),
                                key=lambda r: -cast(float, r["mean"]))[:10],
        "best_per_capacity": [_diff(settings[i]) for i in per_cap],
    }
    return result


def _diff(setting: Setting) -> Setting:
    base = dataclasses.asdict(AdapterConfig())
    return {k: v for k, v in setting.items() if base.get(k) != v}


def _blank(n: int) -> Series:
    """Series tuning does not measure for its extra lines (hit ratio only)."""
    return {k: [0] * n for k in runner.SERIES if k != "hit_ratio"}
