"""The device core: the reference driver's ioctl and sysfs semantics, with
no I/O.

``Driver.ioctl(cmd, payload)`` takes a command number and the bytes the
kernel copied in, and returns the bytes to copy out or raises ``OSError``
with the driver's errno.  Every command holds one lock across its state
update and its register writes, as the driver holds its mutex, so a
transport may call in from any thread.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from . import abi, regs
from .sysfs import IN_PROCESS, Attribute, Caller, Store, kstrtou32, os_error

log = logging.getLogger("kvcpu_dev.trace")


#: Block commands: (telemetry counter, register sequence).  The last
#: register of each sequence is the doorbell.
_BLOCK_COMMANDS = {
    abi.KV_CPU_MARK_HOT: ("hot_count", (regs.BOOST_ADDR, regs.BOOST_LEN)),
    abi.KV_CPU_EVICT: ("evict_count", (regs.IMEVICT_ADDR, regs.IMEVICT_LEN)),
    abi.KV_CPU_PREFETCH: (
        "prefetch_count",
        (regs.PREFETCH_ADDR, regs.PREFETCH_LEN, regs.PREFETCH_STEP),
    ),
    abi.KV_CPU_SHARE_PREFIX: ("share_count", (regs.SHARE_ADDR, regs.SHARE_LEN)),
}

_STEP = abi.STEP_INFO.codec
_BLOCK = abi.BLOCK_INFO.codec
_WEIGHTS = abi.WEIGHTS_INFO.codec
_TELEMETRY = abi.TELEMETRY_INFO.codec


def _log_write(write: regs.RegWrite) -> None:
    log.info("  %s", write)


class Traced:
    """--trace for a device with a ``bar0``: log every register write."""

    bar0: regs.Bar0

    @property
    def tracing(self) -> bool:
        """--trace: log every command, decoded, and every register write."""
        return self.bar0.observer is not None

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self.bar0.observer = _log_write if on else None


class Driver(Traced):
    """One KV-CPU device's driver-visible state and its BAR0 window."""

    def __init__(self, model: RegisterListener | None = None, trace_len: int = 4096):
        self.lock = threading.Lock()
        self.bar0 = regs.Bar0(trace_len=trace_len)
        #: What sits behind BAR0 (the device model): told every write at once.
        self.model = model
        self.current_step = 0
        self.step_count = 0
        self.counters = dict.fromkeys(
            ("hot_count", "evict_count", "prefetch_count", "share_count"), 0
        )
        self.last_va = self.last_len = self.last_target_step = 0
        self.weights = dict(regs.DEFAULT_WEIGHTS)
        handlers: dict[int, Callable[[int, bytes], bytes]] = {
            abi.KV_CPU_STEP_ADVANCE: self._step_advance,
            abi.KV_CPU_SET_WEIGHTS: self._set_weights,
            abi.KV_CPU_GET_TELEMETRY: self._get_telemetry,
            **dict.fromkeys(_BLOCK_COMMANDS, self._block),
        }
        # cmd -> (handler, the payload size it takes, or None for _IOR)
        self._dispatch = {
            cmd: (handler, abi.BY_NUMBER[cmd].layout.size
                  if abi.BY_NUMBER[cmd].direction & abi.IOC_WRITE else None)
            for cmd, handler in handlers.items()
        }

    # -- ioctl ---------------------------------------------------------

    def ioctl(self, cmd: int, payload: bytes = b"") -> bytes:
        """Run one command; the reply is what the kernel copies out."""
        entry = self._dispatch.get(cmd)
        if entry is None:
            raise os_error(errno.ENOTTY)
        handler, size = entry
        if size is not None and len(payload) != size:
            # Only an unrestricted ioctl transport can deliver this.
            raise os_error(errno.EINVAL)
        with self.lock:
            if self.tracing:
                self._trace_command(abi.BY_NUMBER[cmd], payload)
            return handler(cmd, payload)

    def _step_advance(self, cmd: int, payload: bytes) -> bytes:
        (step,) = _STEP.unpack(payload)
        self.current_step = step
        self.step_count += 1
        self.last_target_step = step
        self._write64(regs.STEP_ADVANCE, step)
        return b""

    def _block(self, cmd: int, payload: bytes) -> bytes:
        va, length, target_step = _BLOCK.unpack(payload)
        if length == 0:
            raise os_error(errno.EINVAL)
        counter, sequence = _BLOCK_COMMANDS[cmd]
        self.counters[counter] += 1
        self.last_va, self.last_len, self.last_target_step = va, length, target_step
        for offset, value in zip(sequence, (va, length, target_step)):
            self._write64(offset, value)
        return b""

    def _set_weights(self, cmd: int, payload: bytes) -> bytes:
        self.weights = dict(zip(abi.WEIGHT_FIELDS, _WEIGHTS.unpack(payload)))
        self._write_weights()
        return b""

    def _get_telemetry(self, cmd: int, payload: bytes) -> bytes:
        return _TELEMETRY.pack(*self._telemetry_values())

    def _write64(self, offset: int, value: int) -> None:
        self.bar0.write64(offset, value)
        if self.model is not None:
            self.model.mmio_write(offset, value)

    # -- state ---------------------------------------------------------

    def _telemetry_values(self) -> tuple[int, ...]:
        c = self.counters
        w = self.weights
        return (
            self.current_step, self.step_count,
            c["hot_count"], c["evict_count"], c["prefetch_count"], c["share_count"],
            self.last_va, self.last_len, self.last_target_step,
            w["w_r"], w["w_f"], w["w_s"], w["w_d"], w["evict_thresh"], w["prefetch_thresh"],
        )  # fmt: skip

    def telemetry(self) -> dict[str, int]:
        """A consistent snapshot, keyed by the telemetry struct's fields."""
        with self.lock:
            return dict(zip(abi.TELEMETRY_FIELDS, self._telemetry_values()))

    def _write_weights(self) -> None:
        for offset, field in zip(regs.WEIGHT_REGS, abi.WEIGHT_FIELDS):
            self._write64(offset, self.weights[field])

    def _trace_command(self, command: abi.Command, payload: bytes) -> None:
        fields = command.layout.codec.unpack(payload) if payload else ()
        args = ", ".join(f"{n}={v:#x}" for n, v in zip(command.layout.fields, fields))
        log.info("%s(%s)", command.short, args)

    # -- sysfs attributes ----------------------------------------------

    def store_weight(self, field: str, value: int) -> None:
        """A sysfs weight store: set one weight, re-send all six registers."""
        with self.lock:
            self.weights[field] = value
            if self.tracing:
                log.info("sysfs %s=%#x", field, value)
            self._write_weights()

    def attributes(self) -> list[Attribute]:
        """The driver's sysfs attributes, in its order."""
        return driver_attributes(self)


class RegisterListener(Protocol):
    """What sits behind BAR0 in the specification: the device model."""

    def mmio_write(self, offset: int, value: int) -> None: ...


class DriverState(Protocol):
    """What the sysfs attributes need of a device (core.Driver, or the C
    state behind fastpath.NativeDriver)."""

    def telemetry(self) -> dict[str, int]: ...
    def store_weight(self, field: str, value: int) -> None: ...


def driver_attributes(dev: DriverState, sync: Callable[[], object] | None = None) -> list[Attribute]:
    """The driver's sysfs attributes over ``dev``, in the driver's order.
    ``sync`` runs before each read (the daemon drains its event ring, so a
    read after an ioctl sees everything that ioctl caused)."""

    def shower(render: Callable[[dict[str, int]], str]) -> Callable[[], str]:
        def show() -> str:
            if sync is not None:
                sync()
            return render(dev.telemetry())

        return show

    def line(field: str) -> Callable[[dict[str, int]], str]:
        return lambda t: f"{t[field]}\n"

    def storer(field: str) -> Store:
        def store(buf: bytes, caller: Caller = IN_PROCESS) -> None:
            dev.store_weight(field, kstrtou32(buf))

        return store

    return [
        Attribute("current_step", shower(line("current_step"))),
        *(Attribute(f, shower(line(f)), storer(f)) for f in abi.WEIGHT_FIELDS),
        Attribute("telemetry", shower(render_telemetry)),
    ]


def render_telemetry(t: dict[str, int]) -> str:
    """The ``telemetry`` attribute: fifteen key=value lines, last_va in hex."""
    return "".join(f"{k}={v:#x}\n" if k == "last_va" else f"{k}={v}\n" for k, v in t.items())
