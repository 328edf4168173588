"""RTBD, the request-tagged block directory: a fixed tag store of entries.

Each field is one numpy array allocated once at the directory's size, so the
HEPC scan is a handful of vector operations and the memory footprint is
known up front.  A dict maps a block number (va // block_size) to its entry
and a free list hands out entries, so a hint on one block costs O(1).
"""

from __future__ import annotations

import numpy as np

NO_MOVE = -1
REQUEST_UNKNOWN = 0xFFFF  # the ioctls carry no request id; 0 means prefix

# name -> dtype.  Widths follow the hardware entry where it documents one.
FIELDS: dict[str, type] = {
    "live": np.bool_,  # entry in use
    "block": np.uint64,  # block number: the entry covers [block*bs, (block+1)*bs)
    "hint_va": np.uint64,  # (va, len) of the last hint that touched the entry
    "hint_len": np.uint64,
    "tier": np.int8,  # 0 HBM, 1 T1, 2 T2, 3 T3 (2 bits in hardware)
    "priority": np.uint16,  # P at the last scan
    "last_access": np.uint32,  # step of the last access (32 bits in hardware)
    "r": np.uint8,  # recency counter
    "f": np.uint8,  # frequency counter
    "ref": np.uint8,  # reference count (SHARE_PREFIX)
    "prefix": np.bool_,
    "dirty": np.bool_,
    "request_id": np.uint16,
    "hot": np.bool_,  # MARK_HOT protection armed ...
    "hot_step": np.uint32,  # ... at this step
    "armed": np.bool_,  # a PREFETCH target is pending ...
    "target": np.uint32,  # ... for this step
    "arrived_ns": np.int64,  # when the block reached its current tier
    "mv_dst": np.int8,  # destination of the outstanding DMA move, or -1
    "mv_chan": np.int8,  # its channel
    "mv_pos": np.int64,  # its absolute position in that channel's queue
    "gen": np.uint32,  # bumped on every allocation, to spot stale references
}


class Directory:
    """The tag store: field arrays, a block -> entry map and a free list."""

    # One array per FIELDS entry, declared for the type checker (and checked
    # against FIELDS below); __init__ allocates them from FIELDS.
    live: np.ndarray
    block: np.ndarray
    hint_va: np.ndarray
    hint_len: np.ndarray
    tier: np.ndarray
    priority: np.ndarray
    last_access: np.ndarray
    r: np.ndarray
    f: np.ndarray
    ref: np.ndarray
    prefix: np.ndarray
    dirty: np.ndarray
    request_id: np.ndarray
    hot: np.ndarray
    hot_step: np.ndarray
    armed: np.ndarray
    target: np.ndarray
    arrived_ns: np.ndarray
    mv_dst: np.ndarray
    mv_chan: np.ndarray
    mv_pos: np.ndarray
    gen: np.ndarray

    def __init__(self, entries: int):
        self.size = entries
        for name, dtype in FIELDS.items():
            setattr(self, name, np.zeros(entries, dtype=dtype))
        self.mv_dst.fill(NO_MOVE)
        self.index: dict[int, int] = {}
        # Pop from the end: entry 0 is handed out first, and freed entries
        # are reused first, so live entries stay below the high-water mark.
        self.free: list[int] = list(range(entries - 1, -1, -1))
        self.high_water = 0  # every live entry's index is below this

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
        i = self.free.pop()
        if i >= self.high_water:
            self.high_water = i + 1
        self.index[block] = i
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
        del self.index[int(self.block[i])]
        self.live[i] = False
        self.hot[i] = False
        self.armed[i] = False
        self.free.append(i)

    # -- introspection -------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes of the field arrays (the tag store proper)."""
        return sum(getattr(self, name).nbytes for name in FIELDS)

    def live_indices(self) -> np.ndarray:
        return np.flatnonzero(self.live)


assert {k for k, v in Directory.__annotations__.items() if v == "np.ndarray"} == set(FIELDS), \
    "Directory's declared arrays and FIELDS differ"
