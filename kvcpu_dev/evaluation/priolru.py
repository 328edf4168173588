"""Priority-then-LRU, as TensorRT-LLM's KV cache block manager evicts with
retention priorities (KvCacheRetentionConfig): the lowest priority level
goes first, least recently used within a level; an access sets the block's
priority to the one the runtime gives that access.

The priorities a runtime would give, known online: a block that matches a
cached prefix of an earlier request (a shared prefix block) gets ``high``
(TensorRT-LLM's maximum, 100), a block first written by this request gets
the default (35)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .result import Counts

DEFAULT_PRIORITY = 35
PREFIX_PRIORITY = 100


def simulate(accesses: Sequence[int], capacity: int, offsets: Sequence[int] | None = None,
             high: int = PREFIX_PRIORITY, low: int = DEFAULT_PRIORITY,
             priorities: Sequence[int] | None = None) -> Counts:
    """``offsets`` delimit requests (a block is shared once a later request
    uses it); without them every access is its own request.  ``priorities``
    (one per access) gives each access's priority outright instead (a
    recording: the runtime's own hint says which blocks are shared); a miss
    is then a reload when the block was accessed before."""
    levels: dict[int, OrderedDict[int, None]] = {}
    where: dict[int, int] = {}  # block -> its priority level
    owner: dict[int, int] = {}  # block -> the request that first used it
    hits = evictions = reloads = 0
    bounds = iter(offsets[1:] if offsets is not None else ())
    next_bound = next(bounds, None)
    request = 0
    for i, b in enumerate(accesses):
        if offsets is None:
            request = i
        else:
            while next_bound is not None and i >= next_bound:
                request += 1
                next_bound = next(bounds, None)
        first = owner.setdefault(b, request if priorities is None else i)
        if priorities is None:
            prio, before = (high if first != request else low), first != request
        else:
            prio, before = priorities[i], first != i
        level = where.get(b)
        if level is not None:
            hits += 1
            del levels[level][b]
        else:
            if before:
                reloads += 1
            if len(where) >= capacity:
                victim_level = min(k for k, v in levels.items() if v)
                victim, _ = levels[victim_level].popitem(last=False)
                del where[victim]
                evictions += 1
        levels.setdefault(prio, OrderedDict())[b] = None
        where[b] = prio
    return Counts(accesses=len(accesses), hits=hits, evictions=evictions, reloads=reloads)
