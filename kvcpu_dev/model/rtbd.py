"""RTBD, the request-tagged block directory: a fixed tag store of entries.

Each field is one numpy array allocated once at the directory's size, so the
HEPC scan is a handful of vector operations and the memory footprint is
known up front.  A dict maps a block number (va // block_size) to its entry
and a free list hands out entries, so a hint on one block costs O(1).  The
free list holds only released entries, as an array stack; the never-used
ones are the range from the high-water mark up (a Python list of every
index cost an idle daemon 2.5 MB at 65,536 entries).  The model's C hint
engine (fast.py) works on these same arrays; it keeps a mirror of the dict,
which ``mirror`` is then told of every change made here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

NO_MOVE = -1
REQUEST_UNKNOWN = 0xFFFF  # the ioctls carry no request id; 0 means prefix

class IndexMirror(Protocol):
    """A copy of Directory.index kept elsewhere (the C hint engine's)."""

    def put(self, block: int, entry: int) -> None: ...

    def drop(self, block: int) -> None: ...


class Directory:
    """The tag store: field arrays, a block -> entry map and a free list."""

    def __init__(self, entries: int):
        self.size = entries
        # One array per entry field.  Widths follow the hardware entry where
        # it documents one.
        self.live = np.zeros(entries, np.bool_)  # entry in use
        self.block = np.zeros(entries, np.uint64)  # block number: the entry covers [block*bs, (block+1)*bs)
        self.hint_va = np.zeros(entries, np.uint64)  # (va, len) of the last hint that touched the entry
        self.hint_len = np.zeros(entries, np.uint64)
        self.tier = np.zeros(entries, np.int8)  # 0 HBM, 1 T1, 2 T2, 3 T3 (2 bits in hardware)
        self.priority = np.zeros(entries, np.uint16)  # P at the last scan
        self.last_access = np.zeros(entries, np.uint32)  # step of the last access (32 bits in hardware)
        self.r = np.zeros(entries, np.uint8)  # recency counter
        self.f = np.zeros(entries, np.uint8)  # frequency counter
        self.ref = np.zeros(entries, np.uint8)  # reference count (SHARE_PREFIX)
        self.prefix = np.zeros(entries, np.bool_)
        self.dirty = np.zeros(entries, np.bool_)
        self.request_id = np.zeros(entries, np.uint16)
        self.hot = np.zeros(entries, np.bool_)  # MARK_HOT protection armed ...
        self.hot_step = np.zeros(entries, np.uint32)  # ... at this step
        self.armed = np.zeros(entries, np.bool_)  # a PREFETCH target is pending ...
        self.target = np.zeros(entries, np.uint32)  # ... for this step
        self.arrived_ns = np.zeros(entries, np.int64)  # when the block reached its current tier
        self.mv_dst = np.full(entries, NO_MOVE, np.int8)  # destination of the outstanding DMA move, or NO_MOVE
        self.mv_chan = np.zeros(entries, np.int8)  # its channel
        self.mv_pos = np.zeros(entries, np.int64)  # its absolute position in that channel's queue
        self.gen = np.zeros(entries, np.uint32)  # bumped on every allocation, to spot stale references

        self.index: dict[int, int] = {}
        self.mirror: IndexMirror | None = None
        # Released entries are reused first, last in first out; then entry
        # high_water, so live entries stay below the high-water mark.
        self.released = np.zeros(entries, np.int32)  # a stack: its first free[0] items
        self.free = np.zeros(2, np.int64)  # released entries, high-water mark

    @property
    def high_water(self) -> int:
        """Every live entry's index is below this; none from it up was used."""
        return int(self.free[1])

    @high_water.setter
    def high_water(self, value: int) -> None:
        self.free[1] = value

    def free_entries(self) -> int:
        return int(self.free[0]) + self.size - int(self.free[1])

    def free_list(self) -> list[int]:
        """Every free entry, the next to be handed out last."""
        return [*range(self.size - 1, self.high_water - 1, -1), *self.released[:self.free[0]].tolist()]

    # -- lookup and allocation ---------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, block: int) -> int | None:
        return self.index.get(block)

    def allocate(self, block: int, tier: int, step32: int, now_ns: int) -> int:
        """A fresh entry for ``block`` (not yet tracked), as the runtime
        allocated it: untouched counters, last access now, dirty.

        There must be a free entry: the device checks first, and counts a
        full directory in ``dir_full`` instead of asking (a tag store
        cannot make room by forgetting a block that still holds data)."""
        free = self.free
        if free[0]:
            free[0] -= 1
            i = int(self.released[free[0]])
        elif free[1] < self.size:
            i = int(free[1])
            free[1] += 1
        else:
            raise IndexError("allocate from a full directory")
        self.index[block] = i
        if self.mirror is not None:
            self.mirror.put(block, i)
        self.live[i] = True
        self.block[i] = block
        self.tier[i] = tier
        self.priority[i] = 0
        self.last_access[i] = step32
        self.r[i] = 0
        self.f[i] = 0
        self.ref[i] = 0
        self.prefix[i] = False
        self.dirty[i] = True
        self.request_id[i] = REQUEST_UNKNOWN
        self.hot[i] = False
        self.armed[i] = False
        self.target[i] = 0
        self.arrived_ns[i] = now_ns
        self.mv_dst[i] = NO_MOVE
        self.gen[i] += 1
        return i

    def release(self, i: int) -> None:
        """Return an entry to the free list (its block is reclaimed)."""
        block = int(self.block[i])
        del self.index[block]
        if self.mirror is not None:
            self.mirror.drop(block)
        self.live[i] = False
        self.hot[i] = False
        self.armed[i] = False
        self.released[self.free[0]] = i
        self.free[0] += 1

    # -- introspection -------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The field arrays by name (the tag store proper, not the free list)."""
        return {name: value for name, value in vars(self).items()
                if isinstance(value, np.ndarray) and name not in ("released", "free")}

    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays().values())

    def live_indices(self) -> np.ndarray:
        return np.flatnonzero(self.live)
