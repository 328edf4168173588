"""The model's hint doorbells in C (hints.c), over the Python model's own
arrays.

Under a mixed flood the daemon's Python thread spent ~6.5 us on each
command, most of it numpy scalar stores for one block at a time; the fast
path answers one in ~9 us, so a lossless ring made clients wait for the
model.  This engine applies MARK_HOT, EVICT, PREFETCH and SHARE_PREFIX
commands over fewer than 64 blocks, the bulk of any stream, in C, and hands
every other command (STEPs, weights, the window, large hints) back to the
Python model, which stays the specification: tests/model/test_fast_hints.py
runs random command streams through both and compares every field.

State the engine changes lives in arrays both sides share (the directory's
fields and free list, the DMA queues and tallies); the few scalars it needs
are copied in and out around each call; what Python keeps in its own
structures (the block -> entry dict, the prefetch heaps, the counters) the
engine logs and this module replays.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from ..device.model_text import COUNTERS
from . import config, dma, rtbd

try:
    from ._hints import ffi, lib
except ImportError:  # not built: the Python model alone (slower, same results)
    ffi = lib = None

#: DeviceModel._event_ns None (no command's time), as the engine holds it.
NO_EVENT = -1
#: Room in the replay logs: a call stops before a command that could overflow them.
LOG_ENTRIES = 1 << 14


def available() -> bool:
    return lib is not None


def _check_constants(small_hint: int) -> None:
    """hints_build.py states these for the C; they must be the Python's."""
    ours = {"KVM_NO_MOVE": rtbd.NO_MOVE, "KVM_REQUEST_UNKNOWN": rtbd.REQUEST_UNKNOWN, "KVM_T1": config.T1,
            "KVM_PROMOTE": dma.PROMOTE, "KVM_SMALL_HINT": small_hint}
    theirs = {name: getattr(lib, name) for name in ours}
    if ours != theirs:
        raise ImportError(f"kvcpu_dev.model._hints was built with {theirs}, the model has {ours}: rebuild it")


class HintEngine:
    """One model's C hint engine, over the arrays the model shares with it
    (its directory, DMA engine, arming sequence and latches).  Also the
    directory's index mirror.  ``state`` is the struct whose scalars the
    model copies in and out around take()."""

    def __init__(self, d: rtbd.Directory, engine: dma.DmaEngine, cfg: config.ModelConfig,
                 arm_seq: np.ndarray, latch: np.ndarray, small_hint: int):
        """``small_hint``: the model applies hints over fewer blocks at once
        (larger ones in slices); the engine takes no larger one."""
        _check_constants(small_hint)
        self.dir = d
        c = self.state = self._c = ffi.new("struct kvm *")
        self._keep: list[Any] = []  # every buffer the struct points into
        c.size = d.size
        for name in ("live", "r", "f", "ref", "prefix", "dirty", "hot", "armed", "block", "hint_va", "hint_len",
                     "tier", "mv_dst", "mv_chan", "priority", "request_id", "last_access", "hot_step", "target",
                     "gen", "arrived_ns", "mv_pos", "released", "free"):
            setattr(c, name, self._ptr(getattr(d, name)))
        slots = 1 << max(4, (2 * d.size - 1).bit_length())  # at most half full
        self._keys = np.zeros(slots, np.uint64)
        self._vals = np.zeros(slots, np.int32)  # entry + 1, 0 empty
        c.keys, c.vals, c.mask = self._ptr(self._keys), self._ptr(self._vals), slots - 1
        for k, ch in enumerate(engine.channels):
            cc = c.chan[k]
            cc.entry, cc.src, cc.dst, cc.ready = (self._ptr(a) for a in (ch.entry, ch.src, ch.dst, ch.ready))
            cc.slots, cc.sc = ch.slots, self._ptr(ch.sc)
        for name in ("capacity", "resident", "inbound", "bytes_in", "bytes_out", "bytes_moved", "duration", "tally"):
            setattr(c, name, self._ptr(getattr(engine, name)))
        c.block_size = cfg.block_size
        self._counts = np.zeros(len(COUNTERS), np.int64)
        c.arm_seq, c.counts, c.latch = self._ptr(arm_seq), self._ptr(self._counts), self._ptr(latch)
        c.initial_tier = cfg.initial_tier
        c.sim = cfg.clock == "sim"
        c.heap_limit = 4 * d.size + 1024  # DeviceModel._prefetch prunes a heap beyond this
        self._log_block = np.zeros(LOG_ENTRIES, np.uint64)
        self._log_entry = np.zeros(LOG_ENTRIES, np.int32)
        c.log_block, c.log_entry, c.log_cap = self._ptr(self._log_block), self._ptr(self._log_entry), LOG_ENTRIES
        self._push_target = np.zeros(LOG_ENTRIES, np.uint32)
        self._push_seq = np.zeros(LOG_ENTRIES, np.int64)
        self._push_entry = np.zeros(LOG_ENTRIES, np.int32)
        self._push_heap = np.zeros(LOG_ENTRIES, np.int8)
        c.push_target, c.push_seq = self._ptr(self._push_target), self._ptr(self._push_seq)
        c.push_entry, c.push_heap, c.push_cap = self._ptr(self._push_entry), self._ptr(self._push_heap), LOG_ENTRIES
        for block, entry in d.index.items():
            self.put(block, entry)
        self._columns: tuple[Any, ...] | None = None
        self._pointers: tuple[Any, ...] = ()

    def _ptr(self, array: np.ndarray) -> Any:
        assert array.flags.c_contiguous
        buf = ffi.from_buffer(array)
        self._keep.append(buf)
        return ffi.cast("void *", buf)  # cffi lets a void * stand for any pointer field

    # -- the index mirror (rtbd.IndexMirror) ----------------------------------------
    def put(self, block: int, entry: int) -> None:
        lib.kvm_index_put(self._c, block, entry)

    def drop(self, block: int) -> None:
        lib.kvm_index_del(self._c, block)

    def mirrored(self) -> dict[int, int]:
        """The mirror's contents (for the model's self-checks)."""
        used = self._vals > 0
        return dict(zip(self._keys[used].tolist(), (self._vals[used] - 1).tolist()))

    # -- commands --------------------------------------------------------------------
    def take(self, times: np.ndarray, nregs: np.ndarray, offsets: np.ndarray, values: np.ndarray,
             start: int, end: int, heaps: tuple[list[Any], list[Any]]) -> int:
        """Apply commands from ``start`` on, as many as the engine takes
        (before ``end``); returns where it stopped.  The index dict and the
        prefetch ``heaps`` (targets, windowed) then hold what it did."""
        if self._columns is None or self._columns[0] is not times:
            self._columns = (times, nregs, offsets, values)
            self._pointers = tuple(ffi.cast(t, ffi.from_buffer(a)) for t, a in zip(
                ("int64_t *", "uint32_t *", "uint32_t *", "uint64_t *"), self._columns))
        stop: int = lib.kvm_apply(self._c, *self._pointers, offsets.shape[1], start, end)
        if stop != start:
            self._replay(heaps)
        return stop

    def _replay(self, heaps: tuple[list[Any], list[Any]]) -> None:
        """What the call did to Python's own structures: the index dict and
        the prefetch heaps, in the order it happened."""
        c = self._c
        n = c.log_len
        if n:
            index = self.dir.index
            for block, entry in zip(self._log_block[:n].tolist(), self._log_entry[:n].tolist()):
                if entry < 0:
                    del index[block]
                else:
                    index[block] = entry
            c.log_len = 0
        n = c.push_len
        if n:
            for target, seq, entry, heap in zip(self._push_target[:n].tolist(), self._push_seq[:n].tolist(),
                                                 self._push_entry[:n].tolist(), self._push_heap[:n].tolist()):
                heapq.heappush(heaps[heap], (target, seq, entry))
            c.push_len = 0

    def take_counts(self) -> dict[str, int]:
        """The counters the engine added since the last call, zeroed."""
        nonzero = np.flatnonzero(self._counts)
        added = {COUNTERS[k]: int(self._counts[k]) for k in nonzero.tolist()}
        self._counts[nonzero] = 0
        return added
