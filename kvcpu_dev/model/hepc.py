"""HEPC, the hardware eviction policy controller: its registers and the scan.

The scan is a pure function of the directory arrays, the step and the
register values, vectorized over every entry; reference.py states the same
rules one entry at a time and the property tests hold the two equal.

    P = (w_r*R + w_f*F + w_s*S + w_d*D) mod 2^16
    S = 255 - (step - last_access) if that difference < 255 else 0
    D = 255 for a prefix block, else 0
    evict (move down a tier) when P < EVICT_THRESH and ref_count == 0
    stage into T1 when P > PREFETCH_THRESH
    guard: a prefix block with ref_count > 0 is decided nothing by the
    scorer that step (no eviction, no score-driven stage); a stage its
    PREFETCH target asks for is the runtime's request and still happens

On top of the documented rule the model adds two protections (see
docs/device-model.md): a block marked HOT within the last
``hot_protect_steps`` scans, and a block with a PREFETCH target still ahead,
is not demoted.  Both are counted, as is the refcount guard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..device import regs
from .config import T1, T3
from .rtbd import Directory

log = logging.getLogger("kvcpu_dev.model")

#: Weight/threshold register -> (attribute, width in bits in the device).
WEIGHT_REGS = {offset: (name, regs.WEIGHT_BITS[name]) for offset, name in zip(regs.WEIGHT_REGS, regs.DEFAULT_WEIGHTS)}


@dataclass(frozen=True)
class Weights:
    """The values the scorer uses, already at register width."""

    w_r: int = regs.DEFAULT_WEIGHTS["w_r"]
    w_f: int = regs.DEFAULT_WEIGHTS["w_f"]
    w_s: int = regs.DEFAULT_WEIGHTS["w_s"]
    w_d: int = regs.DEFAULT_WEIGHTS["w_d"]
    evict_thresh: int = regs.DEFAULT_WEIGHTS["evict_thresh"]
    prefetch_thresh: int = regs.DEFAULT_WEIGHTS["prefetch_thresh"]


class Registers:
    """The six HEPC registers: hold what fits, log what does not."""

    def __init__(self) -> None:
        self.weights = Weights()
        self.truncations = 0

    def write(self, offset: int, value: int) -> None:
        name, bits = WEIGHT_REGS[offset]
        held = value & ((1 << bits) - 1)
        if held != value:
            self.truncations += 1
            log.info("HEPC %s: programmed %#x, the %d-bit register holds %#x", name, value, bits, held)
        self.weights = Weights(**{**self.weights.__dict__, name: held})


@dataclass
class ScanResult:
    """What one scan decided, as entry indices (ascending) and counts."""

    priority: np.ndarray  # P for every entry (meaningful where live)
    demote: np.ndarray  # entries to move down one tier now
    stage: np.ndarray  # entries to stage into T1 now
    live: int
    candidates: int  # the documented rule: P < EVICT_THRESH and ref == 0
    protected_ref: int  # P < EVICT_THRESH but ref > 0
    protected_hot: int  # candidates kept by a recent MARK_HOT
    protected_prefetch: int  # candidates kept by a PREFETCH target ahead
    at_floor: int  # evictions with no tier below (already in T3)
    busy: int  # evictions of blocks with a move outstanding
    demote_deferred: int  # evictions the destination tier had no room for
    stage_wanted: int  # staging candidates (above threshold or targeted)
    stage_deferred: int  # staging T1 had no room for


class DirectoryPrefix:
    """The first ``size`` entries of a directory, as array views.  Every live
    entry lies below the directory's high-water mark, so a scan of this
    prefix decides exactly what a scan of all entries would, at the cost of
    the directory's occupancy rather than its capacity."""

    def __init__(self, d: Directory | DirectoryPrefix, size: int):
        self._d = d
        self.size = size

    def __getattr__(self, name: str) -> np.ndarray:
        column: np.ndarray = getattr(self._d, name)
        return column[: self.size]


class Scanner:
    """The vectorized scan, with work buffers allocated once for the
    directory's size (fresh 256 KiB temporaries would cost page faults on
    every scan)."""

    def __init__(self, size: int):
        self.size = size
        self._u32 = np.empty(size, dtype=np.uint32)
        self._t16 = np.empty(size, dtype=np.uint16)
        self._p = np.empty(size, dtype=np.uint16)
        self._b = [np.empty(size, dtype=bool) for _ in range(12)]

    def score(self, d: Directory | DirectoryPrefix, step32: int, w: Weights) -> np.ndarray:
        """P for every entry.  Computed in uint16, whose wrap-around is the
        scorer's mod 2^16; S = 255 - min(distance, 255) is the documented
        S, the distance taken in 32-bit arithmetic as the directory's field."""
        n = len(d.last_access)
        u32, t16, p = self._u32[:n], self._t16[:n], self._p[:n]
        np.subtract(np.uint32(step32), d.last_access, out=u32)
        np.minimum(u32, np.uint32(255), out=u32)
        np.copyto(p, u32, casting="unsafe")
        np.multiply(p, np.uint16(w.w_s), out=p)
        np.subtract(np.uint16(255 * w.w_s & 0xFFFF), p, out=p)  # w_s * S
        np.multiply(d.r, np.uint16(w.w_r), out=t16)
        np.add(p, t16, out=p)
        np.multiply(d.f, np.uint16(w.w_f), out=t16)
        np.add(p, t16, out=p)
        np.multiply(d.prefix, np.uint16(255 * w.w_d & 0xFFFF), out=t16)
        np.add(p, t16, out=p)
        return p

    def scan(self, d: Directory | DirectoryPrefix, step32: int, w: Weights, hot_protect_steps: int, room: list[int],
             window: int = 0) -> ScanResult:
        """Score every entry and decide this step's moves.

        ``room`` is the free block count per tier (capacity - resident -
        inbound); moves a tier has no room for are deferred to a later scan,
        the lowest-priority demotions and the most urgent stagings first.
        ``window`` (PREFETCH_WINDOW, 0: none): a PREFETCH target asks for a
        stage only once it is at most this many steps ahead.
        """
        n = getattr(d, "high_water", d.size)
        if n == 0:  # nothing was ever allocated: nothing to decide
            none = np.empty(0, dtype=np.intp)
            return ScanResult(np.empty(0, dtype=np.uint16), none, none, *([0] * 10))
        if n < d.size:
            d = DirectoryPrefix(d, n)
        p = self.score(d, step32, w)
        u32 = self._u32[:n]
        low, cand, hot, ahead, prot, evict, idle, floor, down, stage, guard, tmp = (x[:n] for x in self._b)
        count = np.count_nonzero

        np.less(p, np.uint16(w.evict_thresh), out=low)
        low &= d.live
        np.equal(d.ref, 0, out=tmp)
        np.logical_and(low, tmp, out=cand)  # the documented eviction rule
        np.subtract(np.uint32(step32), d.hot_step, out=u32)
        np.less(u32, np.uint32(min(hot_protect_steps, regs.U32)), out=hot)
        hot &= d.hot
        np.greater_equal(d.target, np.uint32(step32), out=ahead)
        ahead &= d.armed
        np.logical_or(hot, ahead, out=prot)
        np.greater(cand, prot, out=evict)  # a candidate nothing protects
        n_cand, n_evict = int(count(cand)), int(count(evict))
        n_hot = int(count(np.logical_and(cand, hot, out=tmp)))

        np.equal(d.mv_dst, -1, out=idle)
        np.equal(d.tier, np.int8(T3), out=floor)
        at_floor = int(count(np.logical_and(evict, floor, out=tmp)))
        np.greater(evict, idle, out=tmp)  # evicting but a move is outstanding
        busy = int(count(np.greater(tmp, floor, out=tmp)))
        np.logical_and(evict, idle, out=down)
        np.greater(down, floor, out=down)  # idle, not in T3: one tier down

        np.greater(d.tier, np.int8(T1), out=stage)
        stage &= idle
        stage &= d.live
        np.greater(stage, evict, out=stage)
        asked = ahead
        if window:  # targets within the lookahead window only (wide: no uint32 wrap)
            asked = ahead & (d.target.astype(np.int64) - step32 <= window)
        np.greater(p, np.uint16(w.prefetch_thresh), out=tmp)
        np.greater(tmp, _guarded(d, out=guard), out=tmp)  # the scorer's own stage skips guarded blocks
        tmp |= asked
        stage &= tmp  # below T1, idle, not evicted, above threshold (unguarded) or targeted

        room = [max(0, r) for r in room]
        stage_idx = np.flatnonzero(stage)
        staged = _select_stage(stage_idx, p, asked, room[T1])
        room[T1] -= len(staged)
        demote, deferred = _select_down(d.tier, down, p, room, tmp)
        return ScanResult(
            priority=p.copy(),
            demote=demote,
            stage=staged,
            live=int(count(d.live)),
            candidates=n_cand,
            protected_ref=int(count(low)) - n_cand,
            protected_hot=n_hot,
            protected_prefetch=n_cand - n_evict - n_hot,
            at_floor=at_floor,
            busy=busy,
            demote_deferred=deferred,
            stage_wanted=len(stage_idx),
            stage_deferred=len(stage_idx) - len(staged),
        )


def _guarded(d: Directory | DirectoryPrefix, out: np.ndarray) -> np.ndarray:
    """The reference scorer's guard: a prefix block with ref_count > 0."""
    np.not_equal(d.ref, 0, out=out)
    out &= d.prefix
    return out


def scan(d: Directory, step32: int, w: Weights, hot_protect_steps: int, room: list[int],
         window: int = 0) -> ScanResult:
    """One scan with throwaway buffers (tests; the device keeps a Scanner)."""
    return Scanner(d.size).scan(d, step32, w, hot_protect_steps, room, window)


def _select_stage(idx: np.ndarray, p: np.ndarray, ahead: np.ndarray, room: int) -> np.ndarray:
    """Stagings T1 has room for: targeted blocks first, then the highest P."""
    if len(idx) <= room:
        return idx
    targeted = ahead[idx]
    first, rest = idx[targeted], idx[~targeted]
    if len(first) >= room:
        return select_lowest(first, np.uint16(0xFFFF) - p[first], room)
    more = select_lowest(rest, np.uint16(0xFFFF) - p[rest], room - len(first))
    return np.sort(np.concatenate([first, more]))


def _select_down(tier: np.ndarray, down: np.ndarray, p: np.ndarray, room: list[int], tmp: np.ndarray) -> tuple[np.ndarray, int]:
    """Demotions each destination has room for: the lowest P first.
    Works on masks (a gather of 65,536 indices costs more than the scan)."""
    wanted = [int(np.count_nonzero(np.logical_and(down, tier == s, out=tmp))) for s in range(T3)]
    if all(wanted[s] <= room[s + 1] for s in range(T3)):
        return np.flatnonzero(down), 0
    chosen = []
    deferred = 0
    for s in range(T3):
        if wanted[s] > room[s + 1]:
            idx = np.flatnonzero(np.logical_and(down, tier == s, out=tmp))
            down[idx] = False
            chosen.append(select_lowest(idx, p[idx], room[s + 1]))
            deferred += wanted[s] - len(chosen[-1])
    for idx in chosen:
        down[idx] = True
    return np.flatnonzero(down), deferred


def select_lowest(idx: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` entries of ``idx`` (ascending) with the lowest keys, ties
    to the lower index, in index order.  O(n) by partition: a full sort of
    65,536 keys would cost more than the whole scan."""
    if k <= 0:
        return idx[:0]
    if len(idx) <= k:
        return idx
    cut = np.partition(keys, k - 1)[k - 1]
    take: npt.NDArray[np.bool_] = keys < cut  # typed: cut, a numpy scalar, is Any to mypy
    need = k - int(np.count_nonzero(take))
    take[np.flatnonzero(keys == cut)[:need]] = True
    return idx[take]
