"""Least recently used: the policy most runtimes' prefix caches ship
(vLLM's free-block queue, SGLang's radix cache).  A hit moves the block to
the most-recent end; a miss evicts the least recent one."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .result import Counts


def simulate(accesses: Sequence[int], capacity: int) -> Counts:
    cache: OrderedDict[int, None] = OrderedDict()
    seen: set[int] = set()
    hits = evictions = reloads = 0
    for b in accesses:
        if b in cache:
            hits += 1
            cache.move_to_end(b)
            continue
        if b in seen:
            reloads += 1
        else:
            seen.add(b)
        if len(cache) >= capacity:
            cache.popitem(last=False)
            evictions += 1
        cache[b] = None
    return Counts(accesses=len(accesses), hits=hits, evictions=evictions, reloads=reloads)
