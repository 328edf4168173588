"""The device as the daemon runs it: the driver state in C, answered by a C
thread, and the event ring through which Python learns what happened.

``NativeDriver`` has core.Driver's interface (``ioctl``, ``telemetry``,
``attributes``, ``tracing``, ``bar0``), but the state lives in
native/fastpath.c under one mutex, so the fast-path thread can answer
ioctls without the GIL.  Python sees each command afterwards, in batches,
through ``drain()``: the register trace, ``--trace`` logging and the device
model are fed from there, never from the request path.

The ring is bounded and the fast path never waits for Python.  When it is
full an event is dropped and counted; ``drain()`` notices the gap in the
sequence numbers and tells the model it is out of sync.

Under a flood of STEPs, writing and reading an event per command is most of
what the daemon adds to the C floor (8 processes: 1.35x the no-op server's
time, against 1.05x without).  When nothing needs each STEP whole (no
--trace, no recorder, a model with no prefetch deadline or hint in
progress), ``drain()`` lets the fast path coalesce them: a run of plain
STEPs becomes one event with its count, largest and last step, service-time
histogram and last steps for the register trace, which is all the model,
the trace and the metrics read of such a run.  Anything else ends the run,
and the grant, until Python has seen it.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..device import abi, regs
from ..device.spec import Traced, driver_attributes
from ..device.sysfs import Attribute
from ..native._fuse import ffi, lib
from ..paths import RING_EVENTS

log = logging.getLogger("kvcpu_dev.trace")

#: Events read from the ring at a time.
_BATCH = 1024
#: The smallest batch worth finding runs in: numpy's per-call cost (a
#: couple of dozen calls, ~250 us on the cold caches a 10 ms poll wakes
#: to) only pays for itself past some tens of events.
_RUN_MIN = 64

EV_IOCTL = lib.KV_EV_IOCTL
EV_STORE = lib.KV_EV_STORE
EV_RESET = lib.KV_EV_RESET
EV_UNPLUG = lib.KV_EV_UNPLUG
EV_REPLUG = lib.KV_EV_REPLUG
EV_STEPS = lib.KV_EV_STEPS
KIND_NAMES = {EV_IOCTL: "ioctl", EV_STORE: "store", EV_RESET: "reset",
              EV_UNPLUG: "unplug", EV_REPLUG: "replug"}

#: struct kv_event as Python reads one: struct unpacking is several times
#: cheaper than cffi field access.
_EVENT = struct.Struct("<QQIIiiIIIIIIQ96s6I6Q")
assert _EVENT.size == ffi.sizeof("struct kv_event")
_SLOT, _REG_SEQ, _DATA, _REGS = 11, 12, 13, 14  # indexes in an unpacked event
#: struct kv_steps_head, in a KV_EV_STEPS event's data.
_RUN_HEAD = struct.Struct("<5Q")
assert _RUN_HEAD.size == ffi.sizeof("struct kv_steps_head")


#: A batch's columns as numpy reads them in place: enough to tell a plain
#: STEP (see drain()) and for a listener's ``steps(run)``; reg_off and
#: reg_val are the first write's.
_COLUMN_TYPES = {"seq": "<u8", "t_ns": "<u8", "kind": "<u4", "cmd": "<u4", "pid": "<i4",
                 "err": "<i4", "nregs": "<u4", "fault": "<u4", "latency_us": "<u4",
                 "service_ns": "<u4", "reg_seq": "<u8", "reg_off": "<u4", "reg_val": "<u8"}
_COLUMNS = np.dtype({
    "names": list(_COLUMN_TYPES),
    "formats": list(_COLUMN_TYPES.values()),
    "offsets": [ffi.offsetof("struct kv_event", name) for name in _COLUMN_TYPES],
    "itemsize": _EVENT.size,
})


class FaultRule(NamedTuple):
    """What kv_fault_add takes (see fastpath.h)."""

    cmd: int  # an ioctl number, 0 for any
    errno: int  # 0: latency only, the command runs
    mode: int  # lib.KV_FAULT_COUNT, _EVERY, _PROB or _ALWAYS
    n: int = 0  # COUNT: how many; EVERY: the period
    prob: int = 0  # PROB: probability * 2**32
    seed: int = 0
    latency_ns: int = 0


class Event(NamedTuple):
    """One command as the device saw it (the ring's record, decoded)."""

    seq: int
    t_ns: int
    kind: int  # EV_IOCTL, EV_STORE, EV_RESET, EV_UNPLUG or EV_REPLUG
    cmd: int  # the ioctl number; for EV_STORE the weight's index
    pid: int  # the requester (0: in-process or a control)
    errno: int
    data: bytes  # payload in; GET_TELEMETRY: the reply
    writes: tuple[regs.RegWrite, ...]
    fault: int = 0  # the injected fault that fired (its id), or 0
    latency_us: int = 0  # injected latency
    service_ns: int = 0  # time the command held the device


def _decode(ev: tuple[Any, ...]) -> Event:
    seq, t_ns, kind, cmd, pid, err, size, nregs, fault, latency_us, service_ns = ev[:11]
    reg_seq = ev[_REG_SEQ]
    writes = tuple(
        regs.RegWrite(reg_seq + j, ev[_REGS + j], ev[_REGS + 6 + j]) for j in range(nregs)
    )
    return Event(seq, t_ns, kind, cmd, pid, err, ev[_DATA][:size], writes,
                 fault, latency_us, service_ns)


class NativeDriver(Traced):
    """One device's driver state in C, and the Python side of its ring."""

    def __init__(self, model: regs.MmioListener | None = None, *,
                 ring_events: int = RING_EVENTS, trace_len: int = 4096, coalesce: bool = False):
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: Written by the fast-path thread when it returns (FastSession).
        self.exit_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        handle = lib.kv_dev_new(ring_events, self.wake_fd)
        if handle == ffi.NULL:
            os.close(self.wake_fd)
            os.close(self.exit_fd)
            raise MemoryError("cannot allocate the device state")
        self.handle = ffi.gc(handle, lib.kv_dev_free)
        #: Python's copy of BAR0 and its write trace, rebuilt from the ring;
        #: the model listens behind it.
        self.bar0 = regs.Bar0(trace_len=trace_len, model=model)
        self.model = model
        self._at: Callable[[int], None] | None = getattr(model, "at", None)  # a model that keeps time
        #: Called with every drained Event (recorders, metrics).  One that
        #: also has ``steps(run)`` takes a run of plain STEPs as numpy
        #: columns (_COLUMNS) in one call instead.
        self.listeners: list[Callable[[Event], None]] = []
        self.lost = 0  # events the ring dropped, as seen by drain()
        self._next_seq = 1
        self._batch = ffi.new("struct kv_event[]", _BATCH)
        self._raw = ffi.buffer(self._batch)
        self._count = 0  # events in the batch read
        self._runs_possible = False  # the batch is worth looking at as runs
        self._pos = 0  # how many of them are delivered
        self._breaks = np.zeros(0, dtype=np.intp)  # where the batch is not plain STEPs
        self._columns = np.zeros(0, dtype=_COLUMNS)
        self._final: dict[str, int] = {}
        #: Let the fast path coalesce plain STEPs when nothing needs them
        #: whole (see the module's docstring and _grant()).
        self.coalesce = coalesce
        self._holding = False  # no grant: a listener is being attached
        self._run_hist: Any = None  # kv_steps_detail's buffers, made on first use
        self._run_tail: Any = None
        self._flood_run = False  # the last drain delivered a flood's run
        #: Commands in the last event or run delivered (or delivering, if
        #: it raised): those a failure leaves the model unsure of.
        self.delivering = 0
        self._granted_bounds: list[int] | None = None
        #: Each fault rule's seed as given: the C rule's ``seed`` is its
        #: random stream's state, which moves with every draw.
        self._seeds: dict[int, int] = {}

    def close(self) -> None:
        """Stop the fast-path thread and free the state."""
        if self.handle is not None:
            self._final = self.telemetry()
            lib.kv_fast_stop(self.handle)
            ffi.release(self.handle)
            self.handle = None
            os.close(self.wake_fd)
            os.close(self.exit_fd)

    # -- the driver's interface (as core.Driver) ------------------------

    def ioctl(self, cmd: int, payload: bytes = b"", pid: int = 0) -> bytes:
        """Run one command in-process, through the same C code as the node."""
        out = ffi.new("uint8_t[]", abi.TELEMETRY_INFO.size)
        err = lib.kv_dev_ioctl(self.handle, cmd & 0xFFFF_FFFF, payload, len(payload),
                               out, len(out), pid)
        if err:
            raise OSError(err, os.strerror(err))
        return bytes(out) if cmd == abi.KV_CPU_GET_TELEMETRY else b""

    def telemetry(self) -> dict[str, int]:
        if self.handle is None:  # closed: the state it ended with
            return dict(self._final)
        out = ffi.new("uint8_t[]", abi.TELEMETRY_INFO.size)
        lib.kv_dev_telemetry(self.handle, out)
        return dict(zip(abi.TELEMETRY_FIELDS, abi.TELEMETRY_INFO.codec.unpack(bytes(out))))

    def store_weight(self, field: str, value: int) -> None:
        """A sysfs weight store: set one weight, re-send all six registers."""
        lib.kv_dev_store_weight(self.handle, abi.WEIGHT_FIELDS.index(field), value)
        self.drain()  # the trace and the model see it before write() returns

    def attributes(self) -> list[Attribute]:
        return driver_attributes(self, sync=self.drain)

    def bar0_bytes(self) -> bytes:
        """The authoritative register window (the C one)."""
        out = ffi.new("uint8_t[]", regs.BAR0_SIZE)
        lib.kv_dev_bar0(self.handle, out)
        return bytes(out)

    # -- the bench's controls ---------------------------------------------

    def add_fault(self, rule: FaultRule) -> int:
        """Install a fault rule; returns its id (ENOSPC past KV_FAULT_MAX)."""
        f = ffi.new("struct kv_fault *", {
            "cmd": rule.cmd, "err": rule.errno, "mode": rule.mode, "n": rule.n,
            "prob": rule.prob, "seed": rule.seed, "latency_ns": rule.latency_ns})
        res = lib.kv_fault_add(self.handle, f)
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        self._seeds[int(res)] = rule.seed
        return int(res)

    def delete_fault(self, fault_id: int) -> None:
        err = lib.kv_fault_del(self.handle, fault_id)
        if err:
            raise OSError(err, f"no fault {fault_id}")
        self._seeds.pop(fault_id, None)

    def clear_faults(self) -> None:
        lib.kv_fault_clear(self.handle)
        self._seeds.clear()

    def faults(self) -> list[dict[str, int]]:
        """The installed rules; ``seed`` is the one each was given (what
        reproduces its draws), not its stream's current state."""
        out = ffi.new("struct kv_fault[]", lib.KV_FAULT_MAX)
        n = lib.kv_fault_list(self.handle, out, lib.KV_FAULT_MAX)
        keys = ("id", "cmd", "err", "mode", "n", "prob", "seed", "latency_ns", "seen", "hits")
        rules = [{k: getattr(out[i], k) for k in keys} for i in range(n)]
        for rule in rules:
            rule["seed"] = self._seeds.get(rule["id"], rule["seed"])
        self._seeds = {r["id"]: r["seed"] for r in rules}  # rules a reset or the C side ended
        return rules

    def reset(self) -> None:
        """A function-level reset: the power-on state; counted, and the
        model starts over when it drains the event."""
        lib.kv_dev_reset(self.handle)
        self.drain(finish=True)

    @property
    def present(self) -> bool:
        return bool(lib.kv_dev_present(self.handle))

    @present.setter
    def present(self, on: bool) -> None:
        """Surprise removal (False) and its return (True)."""
        lib.kv_dev_set_present(self.handle, on)
        self.drain()

    def resets(self) -> int:
        return int(lib.kv_dev_resets(self.handle))

    # -- the ring ---------------------------------------------------------

    def drain(self, limit: int | None = None, finish: bool = False) -> int:
        """Feed waiting events to the trace, the log, listeners and the
        model, at most ``limit`` (all if None).  Returns how many.

        One pass: once a read finds the ring emptied, events that arrive
        while these are delivered wait for the next call.  Chasing them
        read a few at a time, each read paying the batch's fixed cost, and
        a client back to back kept Python busy half a CPU for it.  A read
        of an attribute after an ioctl still sees that ioctl: its event
        was in the ring before the pass began.

        A model still applying a large hint (incremental mode) takes no
        further event: draining stops there, so its writes stay in order,
        unless ``finish``, which completes such work inline (a read of the
        model's views wants everything the ioctls before it did).

        An exception from the model or a listener propagates, with the
        event that raised it consumed: the next call starts after it.

        With coalescing on, a full drain (no ``limit``) first seals the open
        run of STEPs into the ring (it came after everything there), which
        takes the fast path's lock; a bounded one, the daemon's periodic
        look, does not: the fast path publishes a run itself once it is
        DRAIN_POLL_S old.  Either way it may coalesce again once the drain
        ends (_grant)."""
        if self.coalesce and limit is None:
            lib.kv_ring_seal(self.handle, 0)
        done = 0
        emptied = False
        self._flood_run = False
        while limit is None or done < limit:
            if self._pos == self._count:
                if emptied or not self._read_batch():
                    break
                emptied = self._count < _BATCH
            if self._model_busy():
                if not finish:
                    break
                self.model.work()  # type: ignore[union-attr]
            room = self._count if limit is None else min(self._count, self._pos + limit - done)
            start, end = self._pos, max(self._plain_steps(room), self._pos + 1)
            self._pos = end  # a delivery that raises is not retried: the next call goes on
            self.delivering = end - start  # commands in it (_deliver_run: a run's count)
            if end > start + 1:
                self._deliver_steps(start, end)
            else:
                self._deliver(_EVENT.unpack_from(self._raw, start * _EVENT.size))
            done += end - start
        if finish and self._model_busy():
            self.model.work()  # type: ignore[union-attr]
        if self.coalesce:
            self._grant()
        return done

    def _grant(self) -> None:
        """Let the fast path coalesce plain STEPs if nothing downstream
        needs them one by one, or stop it: no --trace, every listener takes
        runs (``step_run``, with one set of histogram bounds), a trace no
        longer than the run's kept tail, and a model that says a run of
        STEPs is arithmetic for it now (``coalescible``: no deadline, no
        hint in progress).  The fast path grants only if nothing but plain
        STEPs came after what Python has seen, so this decision holds for
        the run; any other command ends the grant there."""
        bounds = self._run_bounds()
        on = lib.kv_ring_coalescing(self.handle)  # lock-free, as is a refusal
        if on and bounds != self._granted_bounds:
            lib.kv_ring_seal(self.handle, 1)  # a listener came or went, --trace, ...
            on = False
        if bounds is not None and not on and \
                lib.kv_ring_coalesce(self.handle, self._next_seq - 1, bounds, len(bounds)):
            self._granted_bounds = bounds

    def _run_bounds(self) -> list[int] | None:
        """The listeners' histogram bounds if the fast path may coalesce
        now, else None."""
        if self._holding or self.tracing or self.bar0.trace_len > lib.KV_STEPS_TAIL:
            return None
        bounds: set[tuple[int, ...]] = set()
        for listener in self.listeners:
            if not hasattr(listener, "step_run"):
                return None
            bounds.add(tuple(listener.run_bounds_ns))  # type: ignore[attr-defined]
        if len(bounds) > 1:
            return None
        if self.model is not None and not getattr(self.model, "coalescible", lambda: False)():
            return None
        return list(bounds.pop()) if bounds else []

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Attach ``listener`` from the next command on: what came before
        goes to the listeners before it.  While it is attached, a listener
        that takes every command whole (no ``step_run``: a recorder) keeps
        the fast path from coalescing."""
        if self.coalesce:  # seal and deliver the open run: it is not this listener's
            lib.kv_ring_seal(self.handle, 1)
            self._holding = True
            try:
                self.drain()
            finally:
                self._holding = False
        self.listeners.append(listener)
        if self.coalesce:
            self._grant()

    def coalescing(self) -> bool:
        """The fast path is coalescing plain STEPs now."""
        return bool(lib.kv_ring_coalescing(self.handle))

    def steps_coalesced(self) -> int:
        """STEPs that went into runs so far (lock-free)."""
        return int(lib.kv_ring_coalesced(self.handle))

    def watch(self, on: bool) -> None:
        """While a flood is coalesced: have the next event (a run, or what
        ended the grant) write the eventfd; off again after a timed wait."""
        lib.kv_ring_watch(self.handle, on)

    def flooded(self) -> bool:
        """The last drain found a flood's run of STEPs (KV_RUN_FLOOD or
        more in one), and the fast path is still coalescing: it publishes
        the next one when that is 100 ms old."""
        return self._flood_run and self.coalescing()

    def _read_batch(self) -> bool:
        n: int = lib.kv_ring_read(self.handle, self._batch, _BATCH)
        self._count, self._pos = n, 0
        self._runs_possible = n >= _RUN_MIN
        if self._runs_possible:
            cols = np.frombuffer(self._raw, dtype=_COLUMNS, count=n)
            plain = ((cols["kind"] == EV_IOCTL) & (cols["cmd"] == abi.KV_CPU_STEP_ADVANCE)
                     & (cols["err"] == 0) & (cols["nregs"] == 1)
                     & (cols["reg_off"] == regs.STEP_ADVANCE))
            self._columns, self._breaks = cols, np.flatnonzero(~plain)
        return n > 0

    def _plain_steps(self, room: int) -> int:
        """The end of the run of plain STEPs from _pos (at most ``room``):
        successful STEP_ADVANCE ioctls, each one STEP_ADVANCE write, none
        lost before or between them, nobody tracing, every listener able to
        take runs.  Such a run is delivered as a whole (_deliver_steps);
        anything else one event at a time."""
        if not self._runs_possible or self.tracing or not all(hasattr(f, "steps") for f in self.listeners):
            return self._pos
        pos = self._pos
        brk = self._breaks
        i = int(np.searchsorted(brk, pos))
        end = min(room, int(brk[i]) if i < len(brk) else self._count)
        seq = self._columns["seq"]
        if end <= pos or int(seq[pos]) != self._next_seq or int(seq[end - 1]) - int(seq[pos]) != end - 1 - pos:
            return pos
        return end

    def _deliver_steps(self, start: int, end: int) -> None:
        cols = self._columns[start:end]
        first = int(cols["reg_seq"][0])
        if int(cols["reg_seq"][-1]) - first != end - 1 - start:  # not back to back
            for pos in range(start, end):
                self._deliver(_EVENT.unpack_from(self._raw, pos * _EVENT.size))
            return
        self._next_seq = int(cols["seq"][-1]) + 1
        self.bar0.replay_run(first, regs.STEP_ADVANCE, cols["reg_val"].copy(), cols["t_ns"].copy())
        for listener in self.listeners:
            listener.steps(cols)  # type: ignore[attr-defined]

    def _model_busy(self) -> bool:
        busy = getattr(self.model, "busy", None)
        return busy is not None and busy()

    def _deliver(self, ev: tuple[Any, ...]) -> None:
        if ev[2] == EV_STEPS:
            self._deliver_run(ev)
            return
        seq = ev[0]
        if seq != self._next_seq:
            self._lose(seq - self._next_seq)
        self._next_seq = seq + 1
        if self.tracing:
            _log_command(ev)
        if ev[2] != EV_IOCTL and ev[2] != EV_STORE:
            self._control(ev[2])
        nregs = ev[7]
        if nregs:
            if self._at is not None:
                self._at(ev[1])  # the model's time: when the command came, not now
            replay, reg_seq = self.bar0.replay, ev[_REG_SEQ]
            for j in range(nregs):
                replay(reg_seq + j, ev[_REGS + j], ev[_REGS + 6 + j])
        if self.listeners:
            event = _decode(ev)
            for listener in self.listeners:
                listener(event)

    def _deliver_run(self, ev: tuple[Any, ...]) -> None:
        """A KV_EV_STEPS event: ``count`` plain STEPs the fast path
        coalesced.  The register trace gets their last steps, the model one
        call (it said it could take one when Python granted the run), each
        listener the run's count and histogram."""
        count, top, last, last_t_ns, service_ns = _RUN_HEAD.unpack_from(ev[_DATA])
        seq = ev[0]
        if seq != self._next_seq:
            self._lose(seq - self._next_seq)
        self._next_seq = seq + count
        self.delivering = count
        self._flood_run = count >= lib.KV_RUN_FLOOD
        if self._run_tail is None:
            self._run_hist = ffi.new("uint64_t[]", lib.KV_STEPS_BOUNDS + 1)
            self._run_tail = ffi.new("uint64_t[]", lib.KV_STEPS_TAIL)
        kept = lib.kv_steps_detail(self.handle, ev[_SLOT], self._run_hist, lib.KV_STEPS_BOUNDS + 1,
                                   self._run_tail, self.bar0.trace_len)  # what the trace keeps
        tail = np.frombuffer(ffi.buffer(self._run_tail, kept * 8), dtype="<u8").copy()
        assert kept and int(tail[-1]) == last, "a run's detail was read twice"
        if not self.bar0.replay_steps(ev[_REG_SEQ], regs.STEP_ADVANCE, count, tail, top, last_t_ns):
            log.warning("the model could not take a run of %d coalesced STEPs; it is out of sync", count)
            note = getattr(self.model, "events_lost", None)
            if note is not None:
                note(count)
        for listener in self.listeners:
            step_run = getattr(listener, "step_run", None)
            if step_run is not None:
                nb = len(listener.run_bounds_ns) + 1  # type: ignore[attr-defined]
                step_run(count, service_ns, list(self._run_hist[0:nb]))
            else:  # appended to ``listeners`` past add_listener(): the next drain stops coalescing
                log.warning("a listener without step_run missed %d coalesced STEPs", count)

    def _control(self, kind: int) -> None:
        log.info("%s", KIND_NAMES[kind])
        if kind == EV_RESET:  # the window and the device behind it start over
            self.bar0.mem[:] = bytes(regs.BAR0_SIZE)
            reset = getattr(self.model, "reset", None)
            if reset is not None:
                reset()

    def _lose(self, count: int) -> None:
        self.lost += count
        log.warning("event ring overflowed: %d command(s) lost; the model is out of sync", count)
        note = getattr(self.model, "events_lost", None)
        if note is not None:
            note(count)

    def arm(self) -> bool:
        """Ask to be woken (the eventfd) by the next event; True if events
        are already waiting, so the caller should drain instead of sleep."""
        return bool(lib.kv_ring_arm(self.handle)) or self._pos < self._count

    def raise_when_behind(self, tid: int) -> None:
        """Let the fast path set thread ``tid`` (the drainer, under
        SCHED_IDLE) to SCHED_OTHER once the ring is a quarter full; this
        call also says the thread has lowered itself again."""
        lib.kv_ring_raise_when_behind(self.handle, tid)
        lib.kv_ring_lowered(self.handle)

    def raises(self) -> int:
        """How many times the fast path raised the drainer."""
        return int(lib.kv_ring_raises(self.handle))

    def raise_refusals(self) -> int:
        """How many times the kernel refused it (no CAP_SYS_NICE: a
        container, --runas)."""
        return int(lib.kv_ring_raise_refusals(self.handle))

    def ring_stats(self) -> dict[str, int]:
        h = self.handle
        return {
            "served": lib.kv_dev_served(h),
            "ring_capacity": lib.kv_ring_capacity(h),
            "ring_depth": lib.kv_ring_depth(h),
            "ring_dropped": lib.kv_ring_dropped(h),
            "steps_coalesced": self.steps_coalesced(),
            "events_lost_seen": self.lost,
        }


def _log_command(ev: tuple[Any, ...]) -> None:
    _, _, kind, cmd, pid, err, size, _, fault = ev[:9]
    data = ev[_DATA][:size]
    if kind not in (EV_IOCTL, EV_STORE):
        return  # _control logs it
    if kind == EV_STORE:
        field = abi.WEIGHT_FIELDS[cmd]
        log.info("sysfs %s=%#x", field, int.from_bytes(data[:4], "little"))
        return
    command = abi.BY_NUMBER.get(cmd)
    if command is None:
        log.info("ioctl %#x from pid %d: %s", cmd, pid, errno.errorcode.get(err, err))
        return
    fields: tuple[int, ...] = ()
    if command.direction & abi.IOC_WRITE and len(data) == command.layout.size:
        fields = command.layout.codec.unpack(data)
    args = ", ".join(f"{n}={v:#x}" for n, v in zip(command.layout.fields, fields))
    log.info("%s(%s)", command.short, args)
    if err or fault:
        injected = f", fault {fault}" if fault else ""
        log.info("  -> %s (pid %d%s)", errno.errorcode.get(err, err) if err else "ok", pid, injected)
