"""Belady's MIN: on a miss evict the resident block whose next use is
farthest in the future (never used again counts as farthest).  With demand
paging (every miss is brought in) it is the optimum hit ratio for a given
capacity.  Next uses are precomputed with numpy; the victim comes from a
max-heap with lazy deletion."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from .result import Counts


def next_uses(accesses: Sequence[int]) -> list[int]:
    """For every position, the position of the block's next access, or
    ``n + position`` if there is none (distinct, all beyond the trace)."""
    ids = np.asarray(accesses, dtype=np.int64)
    n = len(ids)
    nxt = n + np.arange(n, dtype=np.int64)
    if n:
        order = np.argsort(ids, kind="stable")
        same = ids[order[1:]] == ids[order[:-1]]
        nxt[order[:-1][same]] = order[1:][same]
    return nxt.tolist()


def simulate(accesses: Sequence[int], capacity: int, nxt: list[int] | None = None) -> Counts:
    nxt = next_uses(accesses) if nxt is None else nxt
    resident: dict[int, int] = {}  # block -> position of its next use
    heap: list[tuple[int, int]] = []  # (-next use, block); stale entries skipped
    seen: set[int] = set()
    hits = evictions = reloads = 0
    for i, b in enumerate(accesses):
        if b in resident:
            hits += 1
        else:
            if b in seen:
                reloads += 1
            else:
                seen.add(b)
            if len(resident) >= capacity:
                while True:
                    neg, victim = heapq.heappop(heap)
                    if resident.get(victim) == -neg:
                        del resident[victim]
                        evictions += 1
                        break
        resident[b] = nxt[i]
        heapq.heappush(heap, (-nxt[i], b))
    return Counts(accesses=len(accesses), hits=hits, evictions=evictions, reloads=reloads)
