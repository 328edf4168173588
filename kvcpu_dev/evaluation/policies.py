"""The policy names kvcpu-eval knows, each a function of (trace, capacity,
options) returning Counts, so the runner treats every policy alike."""

from __future__ import annotations

from collections.abc import Callable

from . import arc, belady, lru, priolru
from .options import Options as Options  # the runs' shared options, named here too
from .result import Counts, add_bytes
from .traces import Trace


class Cache:
    """Per-trace precomputation shared by the runs of one trace."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self._next: list[int] | None = None

    @property
    def next_uses(self) -> list[int]:
        if self._next is None:
            self._next = belady.next_uses(self.trace.accesses)
        return self._next


Runner = Callable[[Cache, int, Options], Counts]


def _classic(run: Callable[[Cache, int], Counts]) -> Runner:
    return lambda cache, capacity, opts: add_bytes(run(cache, capacity), opts.block_bytes)


def _hepc(setting: str) -> Runner:
    def run(cache: Cache, capacity: int, opts: Options) -> Counts:
        from . import runtime  # numpy model: imported only when asked for
        return runtime.run(cache.trace, capacity, opts, setting)
    return run


POLICIES: dict[str, Runner] = {
    "lru": _classic(lambda c, k: lru.simulate(c.trace.accesses, k)),
    "arc": _classic(lambda c, k: arc.simulate(c.trace.accesses, k)),
    "prio-lru": _classic(lambda c, k: priolru.simulate(c.trace.accesses, k, c.trace.offsets)),
    "belady": _classic(lambda c, k: belady.simulate(c.trace.accesses, k, c.next_uses)),
    "hepc": _hepc("recommended"),
    "hepc-default": _hepc("default"),
}
