"""ARC, the adaptive replacement cache (Megiddo and Modha, FAST 2003, Fig. 4).

T1 holds blocks seen once recently, T2 blocks seen at least twice; the ghost
lists B1 and B2 remember what each recently evicted, and a hit on a ghost
moves the target size ``p`` of T1 towards the list that would have hit."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .result import Counts


class Arc:
    def __init__(self, capacity: int):
        self.c = capacity
        self.p = 0.0
        self.t1: OrderedDict[int, None] = OrderedDict()
        self.t2: OrderedDict[int, None] = OrderedDict()
        self.b1: OrderedDict[int, None] = OrderedDict()
        self.b2: OrderedDict[int, None] = OrderedDict()
        self.evictions = 0

    def _replace(self, x_in_b2: bool) -> None:
        """Move the LRU page of T1 or of T2 to its ghost list (Fig. 4, REPLACE)."""
        t1 = len(self.t1)
        if t1 and (t1 > self.p or (x_in_b2 and t1 == self.p)):
            old, _ = self.t1.popitem(last=False)
            self.b1[old] = None
        else:
            old, _ = self.t2.popitem(last=False)
            self.b2[old] = None
        self.evictions += 1

    def access(self, x: int) -> bool:
        """Reference ``x``; return whether it was a cache hit."""
        c = self.c
        if x in self.t1:  # case I
            del self.t1[x]
            self.t2[x] = None
            return True
        if x in self.t2:
            self.t2.move_to_end(x)
            return True
        if x in self.b1:  # case II
            self.p = min(float(c), self.p + max(len(self.b2) / len(self.b1), 1.0))
            self._replace(False)
            del self.b1[x]
            self.t2[x] = None
            return False
        if x in self.b2:  # case III
            self.p = max(0.0, self.p - max(len(self.b1) / len(self.b2), 1.0))
            self._replace(True)
            del self.b2[x]
            self.t2[x] = None
            return False
        l1 = len(self.t1) + len(self.b1)  # case IV
        if l1 == c:
            if len(self.t1) < c:
                self.b1.popitem(last=False)
                self._replace(False)
            else:
                self.t1.popitem(last=False)
                self.evictions += 1
        elif l1 < c:
            total = l1 + len(self.t2) + len(self.b2)
            if total >= c:
                if total == 2 * c:
                    self.b2.popitem(last=False)
                self._replace(False)
        self.t1[x] = None
        return False


def simulate(accesses: Sequence[int], capacity: int) -> Counts:
    arc = Arc(capacity)
    seen: set[int] = set()
    hits = reloads = 0
    for b in accesses:
        if arc.access(b):
            hits += 1
        elif b in seen:
            reloads += 1
        else:
            seen.add(b)
    return Counts(accesses=len(accesses), hits=hits, evictions=arc.evictions, reloads=reloads)
