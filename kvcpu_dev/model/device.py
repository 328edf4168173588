"""DeviceModel: the KV-CPU device behind BAR0.

The driver's register writes arrive through mmio_write() in order.  Address
and length registers are latched; doorbells act.  A hint doorbell updates the
directory at once (O(blocks named)); the STEP doorbell only records a pending
scan, as on silicon where the ioctl returns after one MMIO write, and
run_pending() performs it later.  A STEP arriving while a scan is still
pending supersedes it.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from ..device import regs
from ..device.model_text import COUNTERS, LAST_SCAN
from ..device.sysfs import Attribute
from . import fast, hepc, views
from .config import HBM, T1, T3, TIER_NAMES, ModelConfig
from .dma import DEMOTE, PROMOTE, DmaEngine
from .rtbd import NO_MOVE, REQUEST_UNKNOWN, Directory

log = logging.getLogger("kvcpu_dev.model")

U32, U64 = regs.U32, regs.U64
#: How long one slice of a large hint may run in incremental mode.
HINT_SLICE_S = 0.002
#: A hint over fewer blocks is applied whole at once (it takes microseconds).
SMALL_HINT = 64

T = TypeVar("T")

#: The address and length registers a hint's doorbell reads, latched in
#: this order (an array the C hint engine shares: struct kvm's ``latch``).
LATCHES = (regs.BOOST_ADDR, regs.IMEVICT_ADDR, regs.PREFETCH_ADDR, regs.PREFETCH_LEN, regs.SHARE_ADDR)
_LATCH = {offset: k for k, offset in enumerate(LATCHES)}
_BOOST, _IMEVICT, _PREFETCH_ADDR, _PREFETCH_LEN, _SHARE = range(len(LATCHES))


class InvariantError(AssertionError):
    """The model's state broke one of its own rules."""


class DeviceModel:
    """RTBD + HEPC + DMA engine, driven by BAR0 writes."""

    def __init__(self, config: ModelConfig | None = None, accelerate: bool = True):
        """``accelerate``: take_commands applies hints in C (fast.py) where
        the extension is built; False, the Python alone (the specification)."""
        self.config = config = config or ModelConfig()
        self.dir = Directory(config.entries)
        self.dma = DmaEngine(config, self.dir)
        self.regs = hepc.Registers()
        self._scanner = hepc.Scanner(config.entries)
        self.block_size = config.block_size
        self.step32 = 0  # the device's 32-bit view of the decode step
        self._period_ns = round(config.step_period * 1e9)
        self._sim_ns = 0
        self._t0 = time.monotonic_ns()
        self._wall_ns = 0  # the wall clock as the model last read it (it never goes back)
        self._event_ns: int | None = None  # at(): when the command being applied reached the device
        self._now: Callable[[], int] = self._sim_now if config.clock == "sim" else self._wall_now
        self._latch = np.zeros(len(LATCHES), np.uint64)
        self._pending: tuple[int, hepc.Weights, int] | None = None  # (step, weights, window latched at the doorbell)
        self._hint_va = self._hint_len = 0  # the hint being applied
        #: The rest of a hint still being applied (incremental mode only).
        self._work: Iterator[object] | None = None
        #: Set by the daemon: a hint over a large range is applied in slices
        #: (see work()), so the process serving attributes stays responsive.
        #: Off, every write has taken full effect when mmio_write returns.
        self.incremental = False
        self._targets: list[tuple[int, int, int]] = []  # heap of (target, arm seq, entry)
        #: The lookahead window (PREFETCH_WINDOW, written by a madvise
        #: PREFETCH hint before its STEP): 0, none, a PREFETCH stages at its
        #: hint; W > 0, only once its target is at most W steps ahead.
        self.window = 0
        self._windowed: list[tuple[int, int, int]] = []  # heap of (target, arm seq, entry) not yet staged
        self._arm_seq = np.zeros(config.entries, dtype=np.int64)
        self._arms = 0
        self._due: list[tuple[int, int, int]] = []  # (entry, gen, deadline ns)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.last_scan: dict[str, int] = dict.fromkeys(LAST_SCAN, 0)
        self._doorbells: dict[int, Callable[[int], None]] = {
            regs.STEP_ADVANCE: self._step,
            regs.BOOST_LEN: lambda v: self._hint("hot", int(self._latch[_BOOST]), v, self._hot),
            regs.IMEVICT_LEN: lambda v: self._hint("evict", int(self._latch[_IMEVICT]), v, self._evict),
            regs.PREFETCH_STEP: self._prefetch_doorbell,
            regs.SHARE_LEN: lambda v: self._hint("share", int(self._latch[_SHARE]), v, self._share),
        }
        self._engine = fast.HintEngine(self.dir, self.dma, config, self._arm_seq, self._latch, SMALL_HINT) \
            if accelerate and fast.available() else None
        self.dir.mirror = self._engine
        self._counted = False  # the engine counted something not yet in counts

    @property
    def counts(self) -> dict[str, int]:
        """The model's counters (COUNTERS), the C engine's included."""
        if self._counted:
            self._counted = False
            for name, added in self._engine.take_counts().items():  # type: ignore[union-attr]
                self._counts[name] += added
        return self._counts

    # -- clocks ---------------------------------------------------------------------
    def _sim_now(self) -> int:
        return self._sim_ns

    def _wall_now(self) -> int:
        t = self._event_ns if self._event_ns is not None else time.monotonic_ns()
        self._wall_ns = max(self._wall_ns, t - self._t0)
        return self._wall_ns

    def now_ns(self) -> int:
        """Device time in ns since the model started."""
        return self._now()

    def at(self, t_ns: int) -> None:
        """The writes that follow, and the work they leave pending, happen
        at CLOCK_MONOTONIC ``t_ns``: when their command reached the device.
        The daemon applies commands in batches, milliseconds after they
        came; on the wall clock each would otherwise seem to arrive when
        drained, and a PREFETCH and the STEP it targets, drained together,
        would leave the DMA engine no time between them.  Until the next
        observation (observe) time stands there; the sim clock ignores it."""
        self._event_ns = t_ns

    def observe(self) -> None:
        """Someone reads the model: bring it to the present."""
        self._event_ns = None
        self._settle()

    # -- BAR0 -------------------------------------------------------------------------
    def mmio_write(self, offset: int, value: int) -> None:
        """One 64-bit register write from the driver, in the driver's order."""
        if self._work is not None:
            self.work()  # a hint still being applied goes first
        value &= U64
        latch = _LATCH.get(offset)
        if latch is not None:
            self._latch[latch] = value
        elif offset in self._doorbells:
            self._doorbells[offset](value)
        elif offset == regs.PREFETCH_WINDOW:
            self.window = self._to_step32(value, "PREFETCH_WINDOW")
        elif offset in hepc.WEIGHT_REGS:
            self.regs.write(offset, value)
        else:
            self._counts["unknown_reg_writes"] += 1

    def take_commands(self, times: np.ndarray, nregs: np.ndarray, offsets: np.ndarray, values: np.ndarray,
                      start: int, end: int) -> int:
        """Commands from ``start`` (each ``nregs[k]`` writes ``offsets[k]``,
        ``values[k]`` at ``times[k]``), as many as the C engine applies at
        once, before ``end``; returns where it stopped: the rest go write
        by write (mmio_write).  Without the engine, none."""
        engine = self._engine
        if engine is None or self._work is not None:
            return start
        c = engine.state  # the scalars the engine reads, copied in; what it changed, back
        c.step32, c.window, c.wall_ns, c.sim_ns, c.arms, c.t0 = \
            self.step32, self.window, self._wall_ns, self._sim_ns, self._arms, self._t0
        c.event_ns = fast.NO_EVENT if self._event_ns is None else self._event_ns  # a command without writes keeps it
        c.targets_len, c.windowed_len = len(self._targets), len(self._windowed)
        stop = engine.take(times, nregs, offsets, values, start, end, (self._targets, self._windowed))
        if stop != start:
            self._wall_ns, self._arms = c.wall_ns, c.arms
            self._event_ns = None if c.event_ns == fast.NO_EVENT else c.event_ns
            self._counted = True
        return stop

    def mmio_write_steps(self, offset: int, count: int, last: int, top: int, t_ns: int | None = None) -> bool:
        """``count`` STEP doorbells, the last one ``last``, the largest
        ``top``, the last at ``t_ns``: what a run of plain STEPs comes to
        (the values between matter to nothing here), when it is arithmetic;
        returns False, untouched, otherwise.  The fast path's coalesced runs
        arrive this way, below coalesce_limit()."""
        if offset != regs.STEP_ADVANCE or top >= self.coalesce_limit():
            return False
        if t_ns is not None:
            self.at(t_ns)  # a plain STEP reads no time but the last one's
        self.step32 = last
        self._counts["steps"] += count
        if self.config.clock == "sim":
            self._sim_ns += count * self._period_ns
        self._counts["scans_superseded"] += count if self._pending is not None else count - 1
        self._pending = (self.step32, self.regs.weights, self.window)
        return True

    def coalesce_limit(self) -> int:
        """Any run of STEPs below this step is arithmetic now: it fits the
        32-bit field and reaches no prefetch deadline (0 while a hint is in
        progress: each write must wait for it).  Until a command other than
        a STEP comes, that stays true (a scan only disarms targets)."""
        if self._work is not None:
            return 0
        limit = U32 + 1
        if self._windowed:  # the step at which the first armed block enters the window
            limit = min(limit, max(0, self._windowed[0][0] - self.window) if self.window else 0)
        return min(limit, self._targets[0][0]) if self._targets else limit

    def _to_step32(self, value: int, what: str) -> int:
        step32 = value & U32
        if step32 != value:
            self._counts["step_truncations"] += 1
            log.info("RTBD %s: step %d does not fit the 32-bit directory field, using %d", what, value, step32)
        return step32

    def _step(self, value: int) -> None:
        """STEP doorbell: move the clock, note deadlines, queue the scan."""
        self.step32 = self._to_step32(value, "STEP_ADVANCE")
        self._counts["steps"] += 1
        if self.config.clock == "sim":
            self._sim_ns += self._period_ns
        if self._pending is not None:
            self._counts["scans_superseded"] += 1
        self._pending = (self.step32, self.regs.weights, self.window)
        now = self._now()
        if self._windowed:  # first: a target reached now still stages, late
            self._enter_window(now)
        heap = self._targets
        while heap and heap[0][0] <= self.step32:
            _, seq, i = heapq.heappop(heap)
            if self._arm_seq[i] == seq:  # the entry's pending arming (else re-armed or reclaimed since)
                self._arm_seq[i] = 0  # no longer pending: a reclaim now is judged by _judge_due
                self._due.append((i, int(self.dir.gen[i]), now))

    def _prefetch_doorbell(self, value: int) -> None:
        target = self._to_step32(value, "PREFETCH target")
        self._hint("prefetch", int(self._latch[_PREFETCH_ADDR]), int(self._latch[_PREFETCH_LEN]),
                   lambda i: self._prefetch(i, target))

    # -- hints ----------------------------------------------------------------------------
    def _hint(self, kind: str, va: int, length: int, apply: Callable[[int], object]) -> None:
        """Apply one hint to every block its range touches."""
        self._counts[f"hint_{kind}"] += 1
        if length == 0:
            self._counts["hints_zero_len"] += 1
            return
        self.dma.advance_to(self._now())  # moves finished by now are final
        self._hint_va, self._hint_len = va, length
        first = va // self.block_size
        last = (min(va + length, U64 + 1) - 1) // self.block_size
        entries = self._entries(first, last, allocate=kind != "evict")
        if last - first < SMALL_HINT:  # most hints: applied at once, no slicing to arrange
            for i in entries:
                apply(i)
            return
        self._work = (apply(i) for i in entries)
        self.work(HINT_SLICE_S if self.incremental else None)

    def busy(self) -> bool:
        """True while a hint is only partly applied (incremental mode)."""
        return self._work is not None

    def work(self, budget_s: float | None = None) -> bool:
        """Go on applying the current hint, for about ``budget_s`` seconds
        (None: to its end).  Returns True once nothing is left."""
        if self._work is None:
            return True
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        for n, _ in enumerate(self._work, start=1):
            if deadline is not None and n % 256 == 0 and time.perf_counter() > deadline:
                return False
        self._work = None
        return True

    def _entries(self, first: int, last: int, allocate: bool) -> Iterator[int]:
        """Entries of blocks first..last, allocating untracked ones if asked.

        Walks the range block by block while that is cheaper than walking the
        directory; once no entry can be allocated and the rest of the range is
        larger than the directory, walks the directory instead, so even a
        hint over the whole address space costs O(entries).
        """
        index = self.dir.index
        b = first
        while b <= last:
            if last - b + 1 > len(index) + 1 and not (allocate and self._can_allocate()):
                inside = sorted(k for k in index if b <= k <= last)
                missing = (last - b + 1) - len(inside)
                if not allocate:
                    self._counts["hint_untracked_blocks"] += missing
                else:
                    self._counts["dir_full" if not self.dir.free_entries() else "alloc_no_room"] += missing
                for k in inside:
                    i = index.get(k)
                    if i is not None:
                        yield i
                return
            i = index.get(b)
            if i is None:
                if allocate:
                    i = self._allocate(b)  # counts its own failure
                else:
                    self._counts["hint_untracked_blocks"] += 1
            if i is not None:
                yield i
            b += 1

    def _can_allocate(self) -> bool:
        return self.dir.free_entries() > 0 and any(self.dma.room(t) > 0 for t in range(self.config.initial_tier, 4))

    def _allocate(self, block: int) -> int | None:
        """Track a block the device has not seen: in the initial tier, or the
        first tier below it with room.  None (counted) when impossible."""
        if not self.dir.free_entries():
            self._counts["dir_full"] += 1
            return None
        tier = next((t for t in range(self.config.initial_tier, 4) if self.dma.room(t) > 0), None)
        if tier is None:
            self._counts["alloc_no_room"] += 1
            return None
        if tier != self.config.initial_tier:
            self._counts["alloc_spilled"] += 1
        i = self.dir.allocate(block, tier, self.step32, self._now())
        self.dma.resident[tier] += 1
        self._counts["blocks_allocated"] += 1
        return i

    def _touch(self, i: int) -> None:
        """What every hint does to an entry: note it, count a use, and keep
        it where it is (a queued demotion is called off)."""
        d = self.dir
        d.hint_va[i] = self._hint_va
        d.hint_len[i] = self._hint_len
        if d.f[i] < 255:
            d.f[i] += 1
        if d.mv_dst[i] > d.tier[i]:
            self.dma.cancel(i)
            self._counts["demotions_cancelled"] += 1

    def _access(self, i: int) -> None:
        d = self.dir
        d.r[i] = 255
        d.last_access[i] = self.step32

    def _hot(self, i: int) -> None:
        """MARK_HOT: an access, and protection for hot_protect_steps scans."""
        self._touch(i)
        self._access(i)
        d = self.dir
        d.hot[i] = True
        d.hot_step[i] = self.step32
        d.dirty[i] = True

    def _share(self, i: int) -> None:
        """SHARE_PREFIX: one more reference; the block becomes a prefix."""
        self._touch(i)
        self._access(i)
        d = self.dir
        d.prefix[i] = True
        d.request_id[i] = 0
        if d.ref[i] == 255:
            self._counts["ref_saturated"] += 1
        else:
            d.ref[i] += 1

    def _prefetch(self, i: int, target: int) -> None:
        """PREFETCH: arm the target step and start staging into T1 now, or,
        with a lookahead window W, once the target is at most W steps ahead."""
        self._touch(i)
        d = self.dir
        d.armed[i] = True
        d.target[i] = target
        self._arms += 1
        self._arm_seq[i] = self._arms
        heapq.heappush(self._targets, (target, self._arms, i))
        if len(self._targets) > 4 * d.size + 1024:
            self._targets = self._pruned(self._targets)
        if d.tier[i] <= T1:
            self._counts["prefetch_already_staged"] += 1
        elif d.mv_dst[i] == NO_MOVE:
            if self.window and target > self.step32 + self.window:
                heapq.heappush(self._windowed, (target, self._arms, i))
                self._counts["prefetch_held_window"] += 1
                if len(self._windowed) > 4 * d.size + 1024:
                    self._windowed = self._pruned(self._windowed)
            elif self.dma.room(T1) > 0:
                self.dma.enqueue_one(PROMOTE, i, T1, self._now())
                self._counts["prefetch_issued_hint"] += 1
            else:
                self._counts["prefetch_deferred_full"] += 1

    def _enter_window(self, now: int) -> None:
        """At a STEP: armed blocks whose target is now within the window
        (every one, once the window is 0 again), still below T1 with no move
        queued, are staged; what T1 has no room for is left to the scan,
        which stages targets within the window first."""
        d, heap = self.dir, self._windowed
        horizon = self.step32 + self.window if self.window else U64
        while heap and heap[0][0] <= horizon:
            target, seq, i = heapq.heappop(heap)
            if not (d.live[i] and self._arm_seq[i] == seq and d.armed[i]) or target < self.step32:
                continue  # re-armed, reclaimed, or its target passed: judged as any other
            if d.tier[i] <= T1 or d.mv_dst[i] != NO_MOVE:
                continue
            if self.dma.room(T1) > 0:
                self.dma.enqueue_one(PROMOTE, i, T1, now)
                self._counts["prefetch_issued_window"] += 1
            else:
                self._counts["prefetch_deferred_full"] += 1

    def _pruned(self, heap: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        kept = [(t, s, i) for t, s, i in heap if self.dir.live[i] and self._arm_seq[i] == s]
        heapq.heapify(kept)
        return kept

    def _evict(self, i: int) -> None:
        """EVICT: a shared block loses one reference; an unshared one is
        reclaimed at once (its move called off, its tier space freed)."""
        d = self.dir
        if d.ref[i] > 0:
            d.ref[i] -= 1
            self._counts["ref_drops"] += 1
            return
        if d.mv_dst[i] != NO_MOVE:
            self.dma.cancel(i)
            self._counts["moves_cancelled_reclaim"] += 1
        if self._arm_seq[i]:  # a PREFETCH's target is still ahead: it can no longer be met
            self._arm_seq[i] = 0
            self._counts["prefetch_reclaimed_before_target"] += 1
        self.dma.resident[d.tier[i]] -= 1
        d.release(i)
        self._counts["blocks_reclaimed"] += 1

    def reset(self) -> None:
        """A function-level reset of the device: the power-on state, with
        the same configuration (what it lost is counted nowhere)."""
        incremental = self.incremental
        self.__init__(self.config, accelerate=self._engine is not None)  # type: ignore[misc]
        self.incremental = incremental

    def events_lost(self, count: int) -> None:
        """The daemon's event ring dropped ``count`` commands before this
        model saw them: say so (model_stats in_sync=0) rather than diverge
        silently."""
        self._counts["events_lost"] += count

    # -- the deferred work ------------------------------------------------------------------
    def has_pending(self) -> bool:
        """True while a STEP's scan has not run yet."""
        return self._pending is not None

    def run_pending(self) -> bool:
        """Bring the DMA engine up to now, judge prefetch deadlines, and run
        the pending scan if there is one.  Returns whether a scan ran."""
        self._settle()
        if self._pending is None:
            return False
        step32, weights, window = self._pending
        self._pending = None
        self._scan(step32, weights, window)
        return True

    def _settle(self) -> None:
        self.work()
        now = self._now()
        self.dma.advance_to(now)
        self._judge_due()

    def _judge_due(self) -> None:
        """A PREFETCH is on time when its block sat in T1 or above by the
        STEP that reached its target step."""
        d = self.dir
        for i, gen, deadline in self._due:
            if not d.live[i] or d.gen[i] != gen:
                self._counts["prefetch_reclaimed_before_target"] += 1
            elif d.tier[i] <= T1 and d.arrived_ns[i] <= deadline:
                self._counts["prefetch_on_time"] += 1
            else:
                self._counts["prefetch_late"] += 1
        self._due.clear()

    def _scan(self, step32: int, weights: hepc.Weights, window: int = 0) -> None:
        t0 = time.perf_counter_ns()
        d = self.dir
        res = self._scanner.scan(d, step32, weights, self.config.hot_protect_steps, self.dma.room(), window)
        n = len(res.priority)  # the scanned prefix: every live entry
        d.priority[:n] = res.priority
        now = self._now()
        self.dma.enqueue_many(PROMOTE, res.stage, T1, now)
        self.dma.enqueue_many(DEMOTE, res.demote, d.tier[res.demote] + 1, now)
        d.armed[:n] &= d.target[:n] >= np.uint32(step32)  # targets behind us no longer protect
        d.r[:n] >>= self.config.r_decay_shift
        elapsed = time.perf_counter_ns() - t0
        self._account_scan(res, step32, elapsed)

    def _account_scan(self, res: hepc.ScanResult, step32: int, elapsed_ns: int) -> None:
        c = self._counts
        c["scans"] += 1
        c["scan_ns_total"] += elapsed_ns
        c["scan_ns_max"] = max(c["scan_ns_max"], elapsed_ns)
        c["evictions_issued"] += len(res.demote)
        c["prefetch_issued_scan"] += len(res.stage)
        c["evict_candidates_total"] += res.candidates
        c["evictions_deferred_full"] += res.demote_deferred
        c["prefetch_deferred_full"] += res.stage_deferred
        self.last_scan.update(
            step=step32, scan_ns=elapsed_ns, live=res.live, evict_candidates=res.candidates,
            protected_ref=res.protected_ref, protected_hot=res.protected_hot,
            protected_prefetch=res.protected_prefetch, evict_at_floor=res.at_floor,
            evict_busy=res.busy, evictions_issued=len(res.demote),
            evictions_deferred_full=res.demote_deferred, stage_wanted=res.stage_wanted,
            prefetch_issued=len(res.stage), prefetch_deferred_full=res.stage_deferred,
        )

    # -- what users read ------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters, the last scan and the registers (settled to now)."""
        self.observe()
        return views.stats(self)

    def blocks(self, tier: int | str | None = None, va_range: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """Live entries in address order; ``va_range`` is [start, end)."""
        self.observe()
        return views.blocks(self, tier, va_range)

    def attributes(self) -> list[Attribute]:
        """Attribute files to publish beside the driver's (read-only)."""

        def settled(render: Callable[[DeviceModel], T]) -> Callable[[], T]:
            def show() -> T:
                self.observe()
                return render(self)
            return show

        return [
            Attribute("model_stats", settled(views.render_stats)),
            Attribute("tiers", settled(views.render_tiers)),
            Attribute("dma", settled(views.render_dma)),
            Attribute("blocks", settled(views.render_blocks), private=True, pieces=settled(views.blocks_pieces)),
            Attribute("model_config", lambda: self.config.to_toml()),
        ]

    # -- self-checks --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise InvariantError if the state breaks a rule of the model."""
        self.work()
        d, dma = self.dir, self.dma
        live = d.live_indices()

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InvariantError(what)

        need(len(d.index) == len(live), f"index holds {len(d.index)} blocks, {len(live)} entries live")
        need(sorted(d.index.values()) == live.tolist(), "index and live entries disagree")
        need(all(int(d.block[i]) == b for b, i in d.index.items()), "an index key names another block")
        need(self._engine is None or self._engine.mirrored() == d.index, "the C engine's index mirror differs")
        free = d.free_list()
        need(len(set(free)) == len(free) and not d.live[free].any(), "free list holds a live entry")
        need(len(free) + len(live) == d.size, "entries lost between free list and directory")
        tiers = d.tier[live]
        need(bool(((tiers >= HBM) & (tiers <= T3)).all()), "a block has no valid tier")
        resident = np.bincount(tiers, minlength=4).tolist()
        need(resident == dma.resident.tolist(), f"resident blocks {resident} != accounted {dma.resident}")
        moving = live[d.mv_dst[live] != NO_MOVE]
        queued = dma.queued_entries()
        need(len(queued) == len(set(queued.tolist())) and set(queued.tolist()) == set(moving.tolist()),
             "queued moves and moving entries disagree (a block in two places)")
        inbound = np.bincount(d.mv_dst[moving], minlength=4).tolist()
        need(inbound == dma.inbound.tolist(), f"inbound {inbound} != accounted {dma.inbound}")
        for t in range(4):
            need(dma.resident[t] + dma.inbound[t] <= dma.capacity[t],
                 f"tier {TIER_NAMES[t]} over capacity: {dma.resident[t]}+{dma.inbound[t]} > {dma.capacity[t]}")
        shared_down = moving[(d.ref[moving] > 0) & (d.mv_dst[moving] > d.tier[moving])]
        need(len(shared_down) == 0 and dma.refcounted_demotions == 0, "a referenced block is being or was demoted")
        moved = int(dma.bytes_moved.sum())
        need(moved == dma.moves_completed * self.block_size == int(dma.bytes_in.sum()) == int(dma.bytes_out.sum()),
             "bytes counted per tier, per direction and per move disagree")
        w = self.regs.weights
        need(max(w.w_r, w.w_f, w.w_s, w.w_d) <= 0xFF and max(w.evict_thresh, w.prefetch_thresh) <= 0xFFFF,
             "a register holds more bits than the hardware has")
        need(bool((d.request_id[live][d.prefix[live]] == 0).all()), "a prefix block has a request id")
        need(set(d.request_id[live][~d.prefix[live]].tolist()) <= {REQUEST_UNKNOWN}, "a request id appeared from nowhere")
