"""The one ring reader: every command the fast path answered, in order,
turned into calls of the declared interfaces (sinks.py).

For each event the reader writes the register trace (Python's copy of
BAR0, and the ``--trace`` log), tells the model the command's register
writes at the time the command came, and hands the command whole to every
listener.  A run of plain STEPs that the fast path coalesced (one
KV_EV_STEPS event: its count, largest and last step, service-time
histogram and last steps) becomes one call of each instead.  That is the
only other shape an event has: coalescing lives in the fast path
(native/ring.c) and here, nowhere else.

The reader also decides when the fast path may coalesce (``_grant``):
when no one needs each STEP whole (no --trace, no recorder, a trace no
longer than a run's kept tail) and below the step the model names
(``ModelSink.coalesce_limit``).  Any other command ends the grant in C,
until Python has seen it.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

import numpy as np

from ..device import regs
from ..device.spec import Traced
from ..device.tables import EventKind
from ..native._fuse import ffi, lib
from .events import AT, COLUMNS, EVENT, RUN_HEAD, CommandBatch, decode, log_command
from .sinks import NO_COALESCING, Listener, ModelSink

log = logging.getLogger("kvcpu_dev.trace")

#: Events read from the ring at a time.
BATCH = 1024

_SEQ, _REG_SEQ, _SLOT, _DATA = AT["seq"], AT["reg_seq"], AT["aux"], AT["data"]
_RESET, _STEPS = EventKind.RESET, EventKind.STEPS
_WRITE_INDEX = np.arange(lib.KV_EV_REGS)


class RingReader(Traced):
    """The consumer of one device's event ring (the daemon's Python thread).
    ``tracing`` (Traced): --trace, every command and register write logged."""

    def __init__(self, handle: Any, model: ModelSink, *, trace_len: int = 4096, coalesce: bool = False):
        self._h = handle
        self.model = model
        #: Python's copy of BAR0 and its write trace, rebuilt from the ring.
        self.bar0 = regs.Bar0(trace_len=trace_len)
        self.listeners: list[Listener] = []
        self.lost = 0  # commands the ring dropped, as the sequence numbers show
        #: Let the fast path coalesce plain STEPs when nothing needs them whole.
        self.coalesce = coalesce
        #: Commands in the last event or run delivered (or delivering, if
        #: it raised): those a failure leaves the model unsure of.
        self.delivering = 0
        self._next_seq = 1
        self._batch = ffi.new("struct kv_event[]", BATCH)
        self._raw = ffi.buffer(self._batch)
        self._count = 0  # events in the batch read
        self._pos = 0  # how many of them are delivered
        self._cols = np.zeros(0, dtype=COLUMNS)  # the batch as numpy columns
        self._seq: list[int] = []
        self._kind: list[int] = []
        self._breaks: list[int] = []
        self._holding = False  # no grant: a listener is being attached
        self._granted_bounds: list[int] | None = None
        self._flood_run = False  # the last drain delivered a flood's run
        self._run_hist = ffi.new("uint64_t[]", lib.KV_STEPS_BOUNDS + 1)
        self._run_tail = ffi.new("uint64_t[]", lib.KV_STEPS_TAIL)

    # -- draining ------------------------------------------------------------

    def drain(self, limit: int | None = None, finish: bool = False) -> int:
        """Deliver waiting events, at most ``limit`` (None: every command
        taken before this call began, and no more: under a flood a full
        drain still ends).  Returns how many events.

        A model still applying a large hint takes no further write:
        draining stops there, so its writes stay in order, unless
        ``finish``, which completes such work inline (a read of the model's
        views wants everything the commands before it did).

        An exception from the model or a listener propagates, with the
        event that raised it consumed: the next call starts after it.

        With coalescing on, a full drain first seals the open run of STEPs
        into the ring (it came after everything there), which takes the
        fast path's lock; a bounded one, the daemon's periodic look, does
        not: the fast path publishes a run itself once it is old enough.
        Either way the fast path may coalesce again once the drain ends."""
        h = self._h
        target = None
        if limit is None:  # the run is sealed and the last command read in one step
            target = lib.kv_ring_seal(h, 0) if self.coalesce else lib.kv_ring_head_seq(h)
        done = 0
        self._flood_run = False
        model = self.model
        while limit is None or done < limit:
            if target is not None and self._next_seq > target:
                break
            if self._pos == self._count and not self._read_batch():
                break
            pos = self._pos
            if target is not None and self._seq[pos] > target:
                break
            if model.busy():
                if not finish:
                    break
                model.work()
            if self._seq[pos] != self._next_seq:
                self._lose(self._seq[pos] - self._next_seq)
            if self._kind[pos] == _STEPS:
                self._pos = pos + 1
                self._deliver_run(EVENT.unpack_from(self._raw, pos * EVENT.size))
                done += 1
                continue
            end = self._segment_end(pos, None if limit is None else limit - done, target)
            done += self._deliver(pos, end)
        if finish and model.busy():
            model.work()
        if target is not None and self._pos == self._count and self._next_seq <= target \
                and not lib.kv_ring_depth(h):
            # Everything taken before the call is read, yet commands up to
            # target never came: a lossy ring dropped them after its last
            # kept event.  Said now, not at the next command.
            self._lose(target + 1 - self._next_seq)
            self._next_seq = target + 1
        if self.coalesce:
            self._grant()
        return done

    def _read_batch(self) -> bool:
        n = self._count = lib.kv_ring_read(self._h, self._batch, BATCH)
        self._pos = 0
        if not n:
            return False
        cols = self._cols = np.frombuffer(self._raw, dtype=COLUMNS, count=n)
        self._seq = cols["seq"].tolist()
        self._kind = cols["kind"].tolist()
        # The register writes as contiguous columns, for the model's take_commands.
        self._writes = tuple(np.ascontiguousarray(cols[name]) for name in ("t_ns", "nregs", "reg_off", "reg_val"))
        # Where a segment of whole commands must end: a run, a reset (the
        # window starts over), a gap in the sequence (lost events).
        seq = cols["seq"]
        special = np.flatnonzero((cols["kind"] == _STEPS) | (cols["kind"] == _RESET))
        gaps = np.flatnonzero(seq[1:] != seq[:-1] + 1) + 1
        self._breaks = np.union1d(np.union1d(special, special + 1), gaps).tolist()
        return True

    def _segment_end(self, pos: int, room: int | None, target: int | None) -> int:
        """The end of the commands from ``pos`` that go together: up to the
        next break, at most ``room`` of them, none taken after ``target``."""
        i = bisect.bisect_right(self._breaks, pos)
        end = self._breaks[i] if i < len(self._breaks) else self._count
        if room is not None:
            end = min(end, pos + room)
        if target is not None:
            end = min(end, bisect.bisect_right(self._seq, target, pos, end))
        return end

    def _deliver(self, start: int, end: int) -> int:
        """Commands start..end (no run, no gap among them; a reset alone):
        the model each one's writes at its time, until it is busy with a
        large hint; then the register trace and the listeners those it
        took.  Returns how many were delivered."""
        cols = self._cols
        model = self.model
        stop = start
        self.delivering = 1
        try:
            if self.tracing:  # each command logged before its writes
                stop = self._deliver_traced(start, end)
            elif self._kind[start] == _RESET:
                stop = start + 1
                model.reset()
            else:
                stop = self._deliver_writes(start, end)
        finally:
            stop = max(stop, self._pos)  # _deliver_writes moves _pos past what it consumed, even on a raise
            if stop > start:
                self._pos = stop
                self._next_seq = self._seq[stop - 1] + 1
                if not self.tracing:
                    self._trace(start, stop)
                if self.listeners:
                    batch = CommandBatch(self._raw, cols, start, stop)
                    for listener in self.listeners:
                        listener.take(batch)
        return stop - start

    def _deliver_writes(self, start: int, end: int) -> int:
        """Commands start..end to the model: as many at once as it takes
        (its C hint engine), the rest write by write, each at the time its
        command came; until it is busy with a large hint.  Returns where it
        stopped; ``self._pos`` follows, so a command the model raises on is
        consumed."""
        model = self.model
        times, nregs, offsets, values = self._writes
        pos = start
        while pos < end:
            pos = self._pos = model.take_commands(times, nregs, offsets, values, pos, end)
            if pos == end:
                break
            self._pos = pos + 1  # consumed, even if the model raises on it
            n = int(nregs[pos])
            if n:
                model.at(int(times[pos]))  # the model's time: when the command came, not now
                for offset, value in zip(offsets[pos, :n].tolist(), values[pos, :n].tolist()):
                    model.mmio_write(offset, value)
            pos += 1
            if model.busy():
                break
        return pos

    def _deliver_traced(self, start: int, end: int) -> int:
        """--trace: one command at a time, its line, then its writes."""
        model = self.model
        for pos in range(start, end):
            raw = EVENT.unpack_from(self._raw, pos * EVENT.size)
            ev = decode(raw)
            log_command(ev)
            if ev.kind == _RESET:
                self.bar0.mem[:] = bytes(regs.BAR0_SIZE)
                model.reset()
            if ev.writes:
                model.at(ev.t_ns)
            for w in ev.writes:
                self.bar0.replay(w.seq, w.offset, w.value)
                model.mmio_write(w.offset, w.value)
            if model.busy():
                return pos + 1
        return end

    def _trace(self, start: int, stop: int) -> None:
        """The register trace and Python's copy of BAR0 after commands
        start..stop, in one step."""
        cols = self._cols[start:stop]
        if self._kind[start] == _RESET:
            self.bar0.mem[:] = bytes(regs.BAR0_SIZE)
            return
        counts = cols["nregs"]
        written = counts > 0
        if not written.any():
            return
        mask = _WRITE_INDEX < counts[:, None]
        offsets, values = cols["reg_off"][mask], cols["reg_val"][mask]
        last_first = offsets[::-1]
        registers, index = np.unique(last_first, return_index=True)
        last = dict(zip(registers.tolist(), values[::-1][index].tolist()))
        self.bar0.replay_writes(int(cols["reg_seq"][written][0]), offsets, values, last)

    def _deliver_run(self, raw: tuple[Any, ...]) -> None:
        """``count`` plain STEPs the fast path coalesced: the register trace
        gets their last steps, the model one call (it named the limit the
        run stayed below), each listener the count and histogram."""
        count, top, last, last_t_ns, service_ns = RUN_HEAD.unpack_from(raw[_DATA])
        self._next_seq = raw[_SEQ] + count
        self.delivering = count
        self._flood_run = count >= lib.KV_RUN_FLOOD
        kept = lib.kv_steps_detail(self._h, raw[_SLOT], self._run_hist, lib.KV_STEPS_BOUNDS + 1,
                                   self._run_tail, self.bar0.trace_len)  # what the trace keeps
        tail = np.frombuffer(ffi.buffer(self._run_tail, kept * 8), dtype="<u8").copy()
        assert kept and int(tail[-1]) == last, "a run's detail was read twice"
        self.bar0.replay_run(raw[_REG_SEQ], regs.STEP_ADVANCE, count, tail)
        if not self.model.mmio_write_steps(regs.STEP_ADVANCE, count, last, top, last_t_ns):
            log.warning("the model could not take a run of %d coalesced STEPs; it is out of sync", count)
            self.model.events_lost(count)
        for listener in self.listeners:
            listener.step_run(count, service_ns, list(self._run_hist[0:len(listener.run_bounds_ns) + 1]))

    def _lose(self, count: int) -> None:
        self.lost += count
        log.warning("event ring overflowed: %d command(s) lost; the model is out of sync", count)
        self.model.events_lost(count)

    # -- listeners -----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Attach ``listener`` from the next command on: what came before
        goes to the listeners before it.  While it is attached, a listener
        that takes every command whole (a recorder) keeps the fast path
        from coalescing."""
        if self.coalesce:  # seal and deliver the open run: it is not this listener's
            lib.kv_ring_seal(self._h, 1)
            self._holding = True
            try:
                self.drain()
            finally:
                self._holding = False
        self.listeners.append(listener)
        self._bound_backlog()
        if self.coalesce:
            self._grant()

    def remove_listener(self, listener: Listener) -> None:
        """Detach ``listener`` once it has every command taken so far."""
        self.drain()
        if listener in self.listeners:
            self.listeners.remove(listener)
            self._bound_backlog()

    def _bound_backlog(self) -> None:
        """The fast path holds at most the smallest backlog a listener asks."""
        bounds = [listener.backlog for listener in self.listeners if listener.backlog]
        lib.kv_ring_set_backlog(self._h, min(bounds, default=0))

    # -- coalescing ----------------------------------------------------------------

    def _grant(self) -> None:
        """Let the fast path coalesce plain STEPs below the model's limit if
        nothing downstream needs them one by one, or stop it.  The fast
        path grants only if nothing but plain STEPs came after what Python
        has seen, so this decision holds for the run."""
        h = self._h
        bounds = self._run_bounds()
        step_limit = self.model.coalesce_limit() if bounds is not None else NO_COALESCING
        on = lib.kv_ring_coalescing(h)  # lock-free, as is a refusal
        if on and bounds != self._granted_bounds:
            lib.kv_ring_seal(h, 1)  # a listener came or went, --trace, ...
            on = False
        if bounds is not None and step_limit != NO_COALESCING and not on and \
                lib.kv_ring_coalesce(h, self._next_seq - 1, bounds, len(bounds), step_limit):
            self._granted_bounds = bounds

    def _run_bounds(self) -> list[int] | None:
        """The listeners' histogram bounds if runs may be coalesced now,
        else None."""
        if self._holding or self.tracing or self.bar0.trace_len > lib.KV_STEPS_TAIL:
            return None
        if any(listener.whole_commands for listener in self.listeners):
            return None
        bounds: set[tuple[int, ...]] = {tuple(listener.run_bounds_ns) for listener in self.listeners}
        if len(bounds) > 1:
            return None
        return list(bounds.pop()) if bounds else []

    def coalescing(self) -> bool:
        """The fast path is coalescing plain STEPs now."""
        return bool(lib.kv_ring_coalescing(self._h))

    def steps_coalesced(self) -> int:
        """STEPs that went into runs so far (lock-free)."""
        return int(lib.kv_ring_coalesced(self._h))

    def flooded(self) -> bool:
        """The last drain found a flood's run of STEPs and the fast path is
        still coalescing: it publishes the next one only when that is
        FLOOD_RUN_PUBLISH_NS old."""
        return self._flood_run and self.coalescing()

    # -- waking ---------------------------------------------------------------------

    def arm(self) -> bool:
        """Ask to be woken (the eventfd) by the next event; True if events
        are already waiting, so the caller should drain instead of sleep."""
        return bool(lib.kv_ring_arm(self._h)) or self._pos < self._count

    def watch(self, on: bool) -> None:
        """While a flood is coalesced: have the next event (a run, or what
        ended the grant) write the eventfd; off again after a timed wait."""
        lib.kv_ring_watch(self._h, on)

    def stats(self) -> dict[str, int]:
        h = self._h
        return {
            "served": lib.kv_dev_served(h),
            "lossless": lib.kv_ring_lossless(h),
            "ring_capacity": lib.kv_ring_capacity(h),
            "ring_depth": lib.kv_ring_depth(h),
            "ring_dropped": lib.kv_ring_dropped(h),
            "ring_stalls": lib.kv_ring_stalls(h),
            "ring_stall_ns": lib.kv_ring_stall_ns(h),
            "steps_coalesced": self.steps_coalesced(),
            "events_lost_seen": self.lost,
        }
