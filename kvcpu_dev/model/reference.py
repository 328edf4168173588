"""The HEPC scan written one entry at a time, for clarity: the oracle the
vectorized scan (hepc.Scanner) is tested against, and the baseline its
benchmark is measured against.  No numpy beyond reading the directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import T1, T3
from .hepc import Weights
from .rtbd import NO_MOVE, Directory


@dataclass
class Entry:
    """The fields of one directory entry that the scan reads."""

    live: bool = True
    tier: int = 0
    r: int = 0
    f: int = 0
    last_access: int = 0
    ref: int = 0
    prefix: bool = False
    hot: bool = False
    hot_step: int = 0
    armed: bool = False
    target: int = 0
    moving: bool = False


@dataclass
class Decision:
    priority: list[int] = field(default_factory=list)
    demote: list[int] = field(default_factory=list)
    stage: list[int] = field(default_factory=list)
    live: int = 0
    candidates: int = 0
    protected_ref: int = 0
    protected_hot: int = 0
    protected_prefetch: int = 0
    at_floor: int = 0
    busy: int = 0
    demote_deferred: int = 0
    stage_wanted: int = 0
    stage_deferred: int = 0


def score(e: Entry, step: int, w: Weights) -> int:
    """P = (w_r*R + w_f*F + w_s*S + w_d*D) mod 2^16."""
    distance = (step - e.last_access) % 2**32  # the directory's 32-bit step field
    s = 255 - distance if distance < 255 else 0
    d = 255 if e.prefix else 0
    return (w.w_r * e.r + w.w_f * e.f + w.w_s * s + w.w_d * d) % 2**16


def hot_protected(e: Entry, step: int, hot_protect_steps: int) -> bool:
    return e.hot and (step - e.hot_step) % 2**32 < hot_protect_steps


def guarded(e: Entry) -> bool:
    """The scorer decides nothing this step for a referenced prefix block:
    no eviction (ref > 0) and no score-driven stage; a PREFETCH target's
    stage is the runtime's request and still happens."""
    return e.prefix and e.ref > 0


def target_ahead(e: Entry, step: int) -> bool:
    return e.armed and e.target >= step


def target_in_window(e: Entry, step: int, window: int) -> bool:
    """A PREFETCH target the device stages for: ahead, and within the
    lookahead window (PREFETCH_WINDOW; 0: no window, every target ahead)."""
    return target_ahead(e, step) and (window == 0 or e.target - step <= window)


def decide(entries: list[Entry], step: int, w: Weights, hot_protect_steps: int, room: list[int],
           window: int = 0) -> Decision:
    """Score every entry, apply the rules, then fit the moves into ``room``
    (free blocks per tier): stagings into T1 first (targeted within the
    lookahead ``window``, then highest P), then demotions per source tier
    (lowest P); ties to the lower index.  A target ahead protects its block
    from demotion whatever the window."""
    out = Decision()
    want_down: list[tuple[int, int, int]] = []  # (P, index, source tier)
    want_stage: list[tuple[bool, int, int]] = []  # (not targeted, -P, index)
    for i, e in enumerate(entries):
        p = score(e, step, w)
        out.priority.append(p)
        if not e.live:
            continue
        out.live += 1
        ahead = target_ahead(e, step)
        evict = False
        if p < w.evict_thresh:
            if e.ref > 0:
                out.protected_ref += 1
            else:
                out.candidates += 1
                if hot_protected(e, step, hot_protect_steps):
                    out.protected_hot += 1
                elif ahead:
                    out.protected_prefetch += 1
                else:
                    evict = True
        if evict:
            if e.tier == T3:
                out.at_floor += 1
            elif e.moving:
                out.busy += 1
            else:
                want_down.append((p, i, e.tier))
        elif e.tier > T1 and not e.moving and ((p > w.prefetch_thresh and not guarded(e))
                                               or target_in_window(e, step, window)):
            want_stage.append((not target_in_window(e, step, window), -p, i))

    room = [max(0, r) for r in room]
    out.stage_wanted = len(want_stage)
    staged = sorted(want_stage)[: room[T1]]
    room[T1] -= len(staged)
    out.stage = sorted(i for _, _, i in staged)
    out.stage_deferred = len(want_stage) - len(staged)
    for src in range(T3):
        wanted = sorted((p, i) for p, i, t in want_down if t == src)
        chosen = wanted[: room[src + 1]]
        out.demote += [i for _, i in chosen]
        out.demote_deferred += len(wanted) - len(chosen)
    out.demote.sort()
    return out


def entries_from_directory(d: Directory) -> list[Entry]:
    """Every entry of a directory as plain Python values."""
    names = ("live", "tier", "r", "f", "last_access", "ref", "prefix", "hot", "hot_step", "armed", "target")
    cols = [getattr(d, name).tolist() for name in (*names, "mv_dst")]
    return [Entry(**dict(zip(names, row[:-1])), moving=row[-1] != NO_MOVE) for row in zip(*cols)]
