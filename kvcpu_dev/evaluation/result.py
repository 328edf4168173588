"""What one policy run measured, in one shape for every policy, and the
shape of kvcpu-eval's result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NotRequired, TypeAlias, TypedDict


@dataclass
class Counts:
    """Per-run tallies.  ``hits`` are fast-tier hits (HBM for hepc);
    bytes are between the fast tier and the tiers below it (for the classic
    policies: a miss on a block seen before is a reload, every eviction an
    offload; a first access is computed, not moved)."""

    accesses: int = 0
    hits: int = 0
    t1_hits: int = 0  # hepc: in T1 when accessed (a cheap reload)
    evictions: int = 0
    reloads: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    prefetch_on_time: int = 0
    prefetch_late: int = 0
    stall_s: float = 0.0  # hepc: time the DMA model implies for reloads from below T1
    extra: dict[str, Any] = field(default_factory=dict)  # the policy's own tallies (JSON values)

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.accesses if self.accesses else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hit_ratio"] = self.hit_ratio
        return out


def add_bytes(c: Counts, block_bytes: int) -> Counts:
    """Fill the byte counts of a classic policy run from its move counts."""
    c.bytes_up = c.reloads * block_bytes
    c.bytes_down = c.evictions * block_bytes
    return c


#: One policy's measures over the capacities: a list per measure
#: (runner.SERIES), one value per capacity; ``extra``: each run's
#: Counts.extra.
Series: TypeAlias = dict[str, list[Any]]


class EvalResult(TypedDict):
    """What ``kvcpu-eval --json`` prints: the runs of every policy at
    every capacity on one trace or recording, and what they were run on."""

    trace: str
    requests: int  # a recording: its commands
    accesses: int
    unique_blocks: int
    capacity_blocks: list[int]
    capacity_asked: NotRequired[list[str]]  # each capacity as asked ("2%", "4000", "hbm"): the plot's axis
    block_bytes: int
    policies: dict[str, Series]
    parameters: NotRequired[dict[str, Any]]  # the command line's settings (cli.py)
    source: NotRequired[str]  # "recording" for a recording; absent for a trace
    recording: NotRequired[dict[str, Any]]  # what the recording held (recording.evaluate)
    tuning: NotRequired[dict[str, Any]]  # the search and its choice (--tune)
