"""The DMA engine and the tiers' occupancy.

Two channels, each a FIFO served one transfer at a time: channel 0 carries
demotions (evictions, down a tier), channel 1 promotions (staging into T1),
so a prefetch never waits behind an eviction backlog.  A transfer of one
block from tier a to tier b takes ``lat[a] + lat[b] + block_size /
min(bw[a], bw[b])``, rounded up to whole nanoseconds.

Capacity is reserved in the destination when a move is queued and released
in the source when it completes, so ``resident + inbound <= capacity`` holds
for every tier at every instant; a move the destination has no room for is
not queued (the scan retries it at the next step).

Completion times follow the single-server queue recurrence
``c_i = max(c_{i-1}, ready_i) + d_i``, which numpy evaluates for a whole
window of the queue at once; time only moves forward, through advance_to().
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import TIER_NAMES, ModelConfig
from .rtbd import NO_MOVE, Directory

DEMOTE, PROMOTE = 0, 1
CHANNEL_ROLES = ("demote", "promote")
_WINDOW = 4096  # queue items examined per vector step of advance_to()
_FEW = 32  # transfers completed one by one before advance_to() vectorizes


def _scalar(array: str, index: int, doc: str) -> property:
    """An int kept in an int64 array, which the model's C hint engine
    updates in place."""

    def get(self: Any) -> int:
        value: int = getattr(self, array)[index].item()
        return value

    def set_(self: Any, value: int) -> None:
        getattr(self, array)[index] = value

    return property(get, set_, doc=doc)


#: A channel's scalars, in the order of its ``sc`` array (hints.c reads them so).
CHANNEL_SCALARS = ("head", "tail", "free_at", "completed", "cancelled")


class Channel:
    """One channel's queue: a ring of (entry, src, dst, ready time)."""

    def __init__(self, slots: int):
        self.slots = slots
        self.entry = np.full(slots, -1, dtype=np.int32)  # -1: cancelled
        self.src = np.zeros(slots, dtype=np.int8)
        self.dst = np.zeros(slots, dtype=np.int8)
        self.ready = np.zeros(slots, dtype=np.int64)
        self.sc = np.zeros(len(CHANNEL_SCALARS), dtype=np.int64)

    head = _scalar("sc", 0, "absolute position of the first queued slot; the ring index is pos % slots")
    tail = _scalar("sc", 1, "absolute position after the last")
    free_at = _scalar("sc", 2, "when the last completed transfer finished")
    completed = _scalar("sc", 3, "transfers completed")
    cancelled = _scalar("sc", 4, "slots cancelled")

    def __len__(self) -> int:
        return int(self.sc[1] - self.sc[0])

    def nbytes(self) -> int:
        return self.entry.nbytes + self.src.nbytes + self.dst.nbytes + self.ready.nbytes


class DmaEngine:
    """Queues, transfer timing and per-tier accounting."""

    def __init__(self, config: ModelConfig, directory: Directory):
        self.d = directory
        self.block_size = config.block_size
        # Per tier, in blocks (arrays, which the C hint engine updates in place).
        self.capacity = np.array(config.capacity_blocks(), dtype=np.int64)
        self.resident = np.zeros(4, dtype=np.int64)
        self.inbound = np.zeros(4, dtype=np.int64)
        # Two counts of the same bytes, kept apart so invariants can compare.
        self.bytes_moved = np.zeros((4, 4), dtype=np.int64)  # [src, dst]
        self.bytes_in = np.zeros(4, dtype=np.int64)
        self.bytes_out = np.zeros(4, dtype=np.int64)
        self.tally = np.zeros(2, dtype=np.int64)  # moves completed, refcounted demotions
        self.duration = self._durations(config)
        # Twice the directory: cancelled slots linger until popped.
        self.channels = [Channel(2 * directory.size), Channel(2 * directory.size)]

    moves_completed = _scalar("tally", 0, "transfers completed, both channels")
    refcounted_demotions = _scalar("tally", 1, "demotions of a referenced block completed: must stay 0")

    @staticmethod
    def _durations(config: ModelConfig) -> np.ndarray:
        dur = np.zeros((4, 4), dtype=np.int64)
        for a, ta in enumerate(config.tiers):
            for b, tb in enumerate(config.tiers):
                if a != b:
                    seconds = ta.latency + tb.latency + config.block_size / min(ta.bandwidth, tb.bandwidth)
                    dur[a, b] = max(1, math.ceil(seconds * 1e9))
        return dur

    # -- capacity --------------------------------------------------------------
    def room(self, tier: int | None = None) -> Any:
        """Free blocks in a tier (or a list for all), counting reservations."""
        if tier is not None:
            return int(self.capacity[tier] - self.resident[tier] - self.inbound[tier])
        return (self.capacity - self.resident - self.inbound).tolist()

    # -- queueing ----------------------------------------------------------------
    def enqueue_one(self, chan: int, i: int, dst: int, now_ns: int) -> None:
        """Queue one move (the hint path: a few scalar stores)."""
        ch = self.channels[chan]
        if len(ch) == ch.slots:
            self._compact(chan)
        d, sc = self.d, ch.sc
        tail = int(sc[1])
        slot = tail % ch.slots
        ch.entry[slot] = i
        ch.src[slot] = d.tier[i]
        ch.dst[slot] = dst
        ch.ready[slot] = now_ns
        d.mv_dst[i] = dst
        d.mv_chan[i] = chan
        d.mv_pos[i] = tail
        sc[1] = tail + 1
        self.inbound[dst] += 1

    def enqueue_many(self, chan: int, idx: np.ndarray, dst: np.ndarray | int, now_ns: int) -> None:
        """Queue moves for ``idx`` in order (the scan path)."""
        k = len(idx)
        if k == 0:
            return
        dst = np.broadcast_to(np.asarray(dst, dtype=np.int8), (k,))
        ch = self.channels[chan]
        if len(ch) + k > ch.slots:
            self._compact(chan)
        d = self.d
        pos = np.arange(ch.tail, ch.tail + k)
        slots = pos % ch.slots
        ch.entry[slots] = idx
        ch.src[slots] = d.tier[idx]
        ch.dst[slots] = dst
        ch.ready[slots] = now_ns
        d.mv_dst[idx] = dst
        d.mv_chan[idx] = chan
        d.mv_pos[idx] = pos
        ch.tail += k
        self.inbound += np.bincount(dst, minlength=4)

    def cancel(self, i: int) -> None:
        """Drop entry ``i``'s outstanding move; its channel skips the slot."""
        d = self.d
        ch = self.channels[d.mv_chan[i]]
        ch.entry[d.mv_pos[i] % ch.slots] = -1
        ch.cancelled += 1
        self.inbound[d.mv_dst[i]] -= 1
        d.mv_dst[i] = NO_MOVE

    def _compact(self, chan: int) -> None:
        """Squeeze cancelled slots out of a full ring (rare)."""
        ch = self.channels[chan]
        pos = np.arange(ch.head, ch.tail) % ch.slots
        keep = pos[ch.entry[pos] >= 0]
        entry, src, dst, ready = ch.entry[keep], ch.src[keep], ch.dst[keep], ch.ready[keep]
        n = len(keep)
        ch.entry[:n], ch.src[:n], ch.dst[:n], ch.ready[:n] = entry, src, dst, ready
        ch.entry[n:] = -1
        ch.head, ch.tail = 0, n
        self.d.mv_pos[entry] = np.arange(n)

    # -- time ----------------------------------------------------------------------
    def advance_to(self, t_ns: int) -> None:
        """Complete every transfer that finishes at or before ``t_ns``: the
        first few one at a time (a hint's look finds one or two done since
        the last, and numpy's per-call cost is tens of microseconds), the
        rest a window at a time.  Both follow the same recurrence."""
        for ch in self.channels:
            if self._complete_few(ch, t_ns) < _FEW:
                continue
            while len(ch) and self._head_done_by(ch) <= t_ns:
                if self._complete_window(ch, t_ns) < _WINDOW:
                    break

    def _complete_few(self, ch: Channel, t_ns: int) -> int:
        """Complete up to _FEW finished transfers at the head, in order;
        return how many queue slots were popped."""
        n = 0
        sc = ch.sc
        head, tail, free_at, completed, _ = sc.tolist()
        while n < _FEW and head < tail:
            slot = head % ch.slots
            i = int(ch.entry[slot])
            done = max(free_at, int(ch.ready[slot]))  # a cancelled slot takes no time
            if i >= 0:
                src, dst = int(ch.src[slot]), int(ch.dst[slot])
                done += int(self.duration[src, dst])
            if done > t_ns:
                break
            if i >= 0:
                self._land_one(i, src, dst, done)
                completed += 1
            free_at = done
            head += 1
            n += 1
        if n:
            sc[0], sc[2], sc[3] = head, free_at, completed
        return n

    def _land_one(self, i: int, src: int, dst: int, done: int) -> None:
        """_land for one transfer."""
        d = self.d
        if d.ref[i] > 0 and dst > src:
            self.refcounted_demotions += 1
        d.tier[i] = dst
        d.arrived_ns[i] = done
        d.mv_dst[i] = NO_MOVE
        d.dirty[i] = False
        self.bytes_moved[src, dst] += self.block_size
        self.resident[dst] += 1
        self.resident[src] -= 1
        self.inbound[dst] -= 1
        self.bytes_in[dst] += self.block_size
        self.bytes_out[src] += self.block_size
        self.moves_completed += 1

    def _head_done_by(self, ch: Channel) -> int:
        slot = ch.head % ch.slots
        start: int = max(ch.free_at, int(ch.ready[slot]))
        if ch.entry[slot] < 0:
            return start
        return start + int(self.duration[ch.src[slot], ch.dst[slot]])

    def _complete_window(self, ch: Channel, t_ns: int) -> int:
        """Complete the finished prefix of the next window; return its size."""
        w = min(len(ch), _WINDOW)
        slots = np.arange(ch.head, ch.head + w) % ch.slots
        entry, src, dst = ch.entry[slots], ch.src[slots], ch.dst[slots]
        dur = np.where(entry >= 0, self.duration[src, dst], 0)
        total = np.cumsum(dur)
        # c_i = max(c_{i-1}, ready_i) + d_i, unrolled: S_i + max(free, max_j<=i (ready_j - S_{j-1}))
        done = total + np.maximum(ch.free_at, np.maximum.accumulate(ch.ready[slots] - (total - dur)))
        k = int(np.searchsorted(done, t_ns, side="right"))
        if k:
            self._land(entry[:k], src[:k], dst[:k], done[:k])
            ch.free_at = int(done[k - 1])
            ch.head += k
            ch.completed += int(np.count_nonzero(entry[:k] >= 0))
        return k if k < w else _WINDOW

    def _land(self, entry: np.ndarray, src: np.ndarray, dst: np.ndarray, done: np.ndarray) -> None:
        """Apply completed transfers to the directory and the tallies."""
        ok = entry >= 0
        i, src, dst = entry[ok], src[ok], dst[ok]
        d = self.d
        self.refcounted_demotions += int(np.count_nonzero((d.ref[i] > 0) & (dst > src)))
        d.tier[i] = dst
        d.arrived_ns[i] = done[ok]
        d.mv_dst[i] = NO_MOVE
        d.dirty[i] = False
        pairs = np.bincount(src.astype(np.intp) * 4 + dst, minlength=16).reshape(4, 4)
        self.bytes_moved += pairs * self.block_size
        outs, ins = pairs.sum(axis=1), pairs.sum(axis=0)
        self.resident += ins - outs
        self.inbound -= ins
        self.bytes_in += ins * self.block_size
        self.bytes_out += outs * self.block_size
        self.moves_completed += len(i)

    # -- reporting -----------------------------------------------------------------
    def completed_by_direction(self) -> tuple[int, int]:
        """(demotions, promotions) completed, from the byte matrix."""
        m = self.bytes_moved // self.block_size
        return int(np.triu(m, 1).sum()), int(np.tril(m, -1).sum())

    def channel_state(self, chan: int, now_ns: int) -> dict[str, int | str]:
        ch = self.channels[chan]
        live = ch.entry[np.arange(ch.head, ch.tail) % ch.slots] >= 0 if len(ch) else np.zeros(0, bool)
        state: dict[str, int | str] = {
            "channel": chan,
            "role": CHANNEL_ROLES[chan],
            "queued": int(np.count_nonzero(live)),
            "busy": 0,
            "current_entry": -1,
            "current_src": "-",
            "current_dst": "-",
            "current_done_ns": 0,
            "completed": ch.completed,
            "cancelled": ch.cancelled,
        }
        if len(ch):
            slot = ch.head % ch.slots
            start = max(ch.free_at, int(ch.ready[slot]))
            if ch.entry[slot] >= 0 and start <= now_ns:
                state.update(
                    busy=1,
                    current_entry=int(ch.entry[slot]),
                    current_src=TIER_NAMES[ch.src[slot]],
                    current_dst=TIER_NAMES[ch.dst[slot]],
                    current_done_ns=self._head_done_by(ch),
                )
        return state

    def queued_entries(self) -> np.ndarray:
        """Every entry with a queued move, over both channels (for checks)."""
        parts = []
        for ch in self.channels:
            e = ch.entry[np.arange(ch.head, ch.tail) % ch.slots]
            parts.append(e[e >= 0])
        return np.concatenate(parts)

    def nbytes(self) -> int:
        return sum(ch.nbytes() for ch in self.channels)
