"""Each classic policy on hand-checked sequences, Belady against brute
force, and the reference figures on a slice of the shipped trace."""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from evalkit import SHIPPED

from kvcpu_dev.evaluation import arc, belady, lru, priolru


def test_lru_evicts_the_least_recently_used():
    c = lru.simulate([1, 2, 1, 3, 2], 2)  # 3 evicts 2 (1 was used later), 2 then evicts 1
    assert (c.hits, c.evictions, c.reloads) == (1, 2, 1)


def test_arc_keeps_a_block_seen_twice_against_a_scan():
    # LRU at capacity 2 loses 1 to the scan 2,3,4; ARC keeps it in T2.
    seq = [1, 1, 2, 3, 4, 1]
    assert lru.simulate(seq, 2).hits == 1
    a = arc.Arc(2)
    assert [a.access(x) for x in seq] == [False, True, False, False, False, True]
    assert (list(a.t1), list(a.t2), list(a.b1), list(a.b2), a.p) == ([4], [1], [3], [], 0.0)


def test_arc_ghost_hits_adapt_p():
    a = arc.Arc(2)
    hits = [a.access(x) for x in [1, 2, 1, 3, 2]]
    assert hits == [False, False, True, False, False]
    assert a.p == 1.0  # 2 hit in B1: T1's target grows
    assert (list(a.t1), list(a.t2), list(a.b1), list(a.b2)) == ([3], [2], [], [1])
    a.access(1)  # hit in B2: p shrinks back
    assert a.p == 0.0 and (list(a.t1), list(a.t2), list(a.b1), list(a.b2)) == ([], [2, 1], [3], [])


def test_arc_never_holds_more_than_its_capacity():
    a = arc.Arc(3)
    for x in [1, 2, 3, 4, 1, 5, 2, 6, 1, 2, 7, 8, 3, 1, 9, 2, 4, 4, 5, 1] * 3:
        a.access(x)
        assert len(a.t1) + len(a.t2) <= 3 and len(a.t1) + len(a.b1) <= 3
        assert len(a.t1) + len(a.t2) + len(a.b1) + len(a.b2) <= 6


def test_prio_lru_evicts_the_lower_priority_first():
    # r0 = [1, 2], r1 = [1, 3], r2 = [4], r3 = [1]: 1 is a shared prefix block
    # from r1 on, so 3 and then 4 evict the default-priority blocks 2 and 3.
    seq, offsets = [1, 2, 1, 3, 4, 1], [0, 2, 4, 5, 6]
    c = priolru.simulate(seq, 2, offsets)
    assert (c.hits, c.evictions) == (2, 2)
    assert lru.simulate(seq, 2).hits == 1


def test_prio_lru_within_a_level_is_lru():
    assert priolru.simulate([1, 2, 1, 3, 2], 2).hits == lru.simulate([1, 2, 1, 3, 2], 2).hits


def test_belady_evicts_the_block_used_farthest_ahead():
    seq = [1, 2, 3, 1, 2, 4, 1, 2]
    assert belady.next_uses(seq) == [3, 4, 10, 6, 7, 13, 14, 15]  # >= 8: never again
    # 3 evicts 2 (next 4 > 3); 1 hits; 2 evicts 3 (never again); 4 evicts 2 (7 > 6);
    # 1 hits; 2 evicts 1 (14 > 13): 2 hits, 4 evictions (LRU: 0 hits).
    c = belady.simulate(seq, 2)
    assert (c.hits, c.evictions, c.reloads) == (2, 4, 2)  # 2 comes back twice
    assert lru.simulate(seq, 2).hits == 0


def brute_force_best(seq: tuple[int, ...], capacity: int) -> int:
    """The most hits any demand-paging eviction choice achieves."""

    @cache
    def best(i: int, resident: frozenset) -> int:
        if i == len(seq):
            return 0
        b = seq[i]
        if b in resident:
            return 1 + best(i + 1, resident)
        if len(resident) < capacity:
            return best(i + 1, resident | {b})
        return max(best(i + 1, (resident - {v}) | {b}) for v in resident)

    return best(0, frozenset())


@pytest.mark.parametrize("capacity", [1, 2, 3])
def test_belady_is_optimal_against_brute_force(capacity):
    for seq in itertools.product(range(4), repeat=7):
        assert belady.simulate(seq, capacity).hits == brute_force_best(seq, capacity), seq


def test_belady_bounds_every_policy(small_trace):
    acc, offs = small_trace.accesses, small_trace.offsets
    for cap in (5, 20, 60):
        best = belady.simulate(acc, cap).hits
        assert best >= max(lru.simulate(acc, cap).hits, arc.simulate(acc, cap).hits,
                           priolru.simulate(acc, cap, offs).hits)


@pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped trace is not beside the repository")
def test_a_slice_of_the_shipped_trace():
    from kvcpu_dev.evaluation.traces import read_trace
    tr = read_trace(SHIPPED, limit=1500)
    for cap in (300, 1500):
        hits = {f.__module__: f(tr.accesses, cap).hits for f in (lru.simulate, arc.simulate, belady.simulate)}
        assert hits["kvcpu_dev.evaluation.belady"] >= max(hits.values())
    inf = len(tr.accesses) - tr.unique_blocks
    assert belady.simulate(tr.accesses, tr.unique_blocks).hits == lru.simulate(tr.accesses, tr.unique_blocks).hits == inf
