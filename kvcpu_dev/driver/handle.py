"""The device as the daemon runs it: the driver's state in C, answered by a
C thread, and the reader through which Python learns what happened.

``NativeDriver`` has the specification's interface (device/spec.py:
``ioctl``, ``telemetry``, ``attributes``, ``tracing``, ``bar0``), but the
state lives in native/driver.c under one mutex, so the fast path's
thread can answer ioctls without the GIL.  Python sees each command
afterwards, in order, through the ring and its one reader (reader.py):
the register trace, ``--trace`` logging, the model and the listeners are
fed from there, never from the request path.

By default the ring is lossless: when it is full, a request waits for
the reader to make room, as a stalled MMIO write would.  ``lossless=False``
(``--lossy``) drops and counts instead; the reader sees the gap in the
sequence numbers and tells the model it is out of sync.
"""

from __future__ import annotations

import mmap
import os
from typing import NamedTuple

from ..device import abi, regs
from ..device.spec import driver_attributes
from ..device.sysfs import Attribute
from ..native._fuse import ffi, lib
from ..paths import RING_EVENTS
from .madvise import MadviseSupervisor
from .reader import RingReader
from .sinks import Listener, ModelSink, NoModel


class FaultRule(NamedTuple):
    """What kv_fault_add takes (native/kvcpu.h)."""

    cmd: int  # an ioctl number, 0 for any
    errno: int  # 0: latency only, the command runs
    mode: int  # a tables.FaultMode
    n: int = 0  # COUNT: how many; EVERY: the period
    prob: int = 0  # PROBABILITY: probability * 2**32
    seed: int = 0
    latency_ns: int = 0


class NativeDriver:
    """One device's driver state in C, and the reader of its ring."""

    def __init__(self, model: ModelSink | None = None, *, ring_events: int = RING_EVENTS,
                 trace_len: int = 4096, coalesce: bool = False, lossless: bool = True):
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: Written by the fast-path thread when it returns (the session).
        self.exit_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        handle = lib.kv_dev_new(ring_events, self.wake_fd, lossless)
        if handle == ffi.NULL:
            os.close(self.wake_fd)
            os.close(self.exit_fd)
            raise MemoryError("cannot allocate the device state")
        self.handle = ffi.gc(handle, lib.kv_dev_free)
        self.lossless = lossless
        self.reader = RingReader(self.handle, model if model is not None else NoModel(),
                                 trace_len=trace_len, coalesce=coalesce)
        self._final: dict[str, int] = {}
        self._capacity = int(lib.kv_ring_capacity(handle))
        #: Each fault rule's seed as given: the C rule's ``seed`` is its
        #: random stream's state, which moves with every draw.
        self._seeds: dict[int, int] = {}
        #: madvise(MADV_KV_*) of the programs ``kvcpu-dev run`` started.
        self.madvise = MadviseSupervisor(self.handle)

    def close(self) -> None:
        """Stop the fast-path thread and free the state."""
        if self.handle is not None:
            self._final = self.telemetry()
            lib.kv_fast_stop(self.handle)
            self.madvise.close()  # after the fast path's stop: a hint waiting for room gives up
            ffi.release(self.handle)
            self.handle = None
            os.close(self.wake_fd)
            os.close(self.exit_fd)

    def share(self, page: mmap.mmap) -> None:
        """Publish struct kv_shared (what the sessions served, the replies
        held for a latency) in ``page``, a mapping another process reads."""
        self._shared = page  # kept alive as long as the C side writes it
        lib.kv_dev_share(self.handle, ffi.from_buffer("struct kv_shared *", page))

    # -- the ring, through its reader ----------------------------------------

    def drain(self, limit: int | None = None, finish: bool = False) -> int:
        """RingReader.drain: the trace, the model and the listeners catch up."""
        return self.reader.drain(limit, finish)

    def add_listener(self, listener: Listener) -> None:
        self.reader.add_listener(listener)

    @property
    def bar0(self) -> regs.Bar0:
        return self.reader.bar0

    @property
    def tracing(self) -> bool:
        return self.reader.tracing

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self.reader.tracing = on

    # -- the driver's interface (as device/spec.py's Driver) ---------------------

    def ioctl(self, cmd: int, payload: bytes = b"", pid: int = 0) -> bytes:
        """Run one command in-process, through the same C code as the node.
        This thread is the ring's consumer, which never waits for room: it
        drains first when the ring is three quarters full."""
        if self.lossless and lib.kv_ring_depth(self.handle) * 4 >= self._capacity * 3:
            self.drain()
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

    def ring_stats(self) -> dict[str, int]:
        return self.reader.stats()
