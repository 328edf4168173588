"""One command as the ring carries it: the event record's layout, read from
its C declaration (native/kvcpu.h) through cffi rather than typed again,
the ``Event`` listeners receive, and its ``--trace`` line."""

from __future__ import annotations

import errno
import logging
import struct
from typing import Any, NamedTuple

import numpy as np

from ..device import abi, regs
from ..device.tables import Advice, EventKind
from ..native._fuse import ffi

log = logging.getLogger("kvcpu_dev.trace")

_CODES = {"uint64_t": "Q", "uint32_t": "I", "int32_t": "i", "uint8_t": "B"}


def _codec(ctype: str) -> tuple[struct.Struct, dict[str, int]]:
    """A little-endian struct.Struct for a C struct of fixed-width fields
    and arrays of them, and the index of each field's first item in what
    it unpacks.  ``uint8_t[N]`` unpacks as one bytes object."""
    fmt, pos, index, item = "<", 0, {}, 0
    for name, field in ffi.typeof(ctype).fields:
        if field.offset > pos:
            fmt += f"{field.offset - pos}x"
        t = field.type
        if t.kind == "array":
            code = _CODES[t.item.cname]
            fmt += f"{t.length}s" if code == "B" else f"{t.length}{code}"
            count = 1 if code == "B" else t.length
        else:
            fmt += _CODES[t.cname]
            count = 1
        index[name] = item
        item += count
        pos = field.offset + ffi.sizeof(t)
    codec = struct.Struct(fmt)
    assert codec.size == ffi.sizeof(ctype), ctype
    return codec, index


#: struct kv_event, unpacked: struct unpacking is several times cheaper
#: than cffi field access.  ``AT[name]`` is a field's place in the tuple.
EVENT, AT = _codec("struct kv_event")
#: struct kv_steps_head, in a KV_EV_STEPS event's data.
RUN_HEAD, _ = _codec("struct kv_steps_head")
_REG_OFF, _REG_VAL = AT["reg_off"], AT["reg_val"]
MAX_REGS = _REG_VAL - _REG_OFF


def _dtype(ctype: str) -> np.dtype[Any]:
    """A numpy structured dtype laid over the C struct in place (fixed-width
    fields, arrays of them as sub-arrays, ``uint8_t[N]`` as bytes)."""
    names, formats, offsets = [], [], []
    for name, field in ffi.typeof(ctype).fields:
        t = field.type
        if t.kind == "array":
            code = _CODES[t.item.cname]
            fmt: Any = f"S{t.length}" if code == "B" else (f"<{code}", (t.length,))
        else:
            fmt = "<" + _CODES[t.cname]
        names.append(name)
        formats.append(fmt)
        offsets.append(field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": ffi.sizeof(ctype)})


#: The same layout as numpy columns, for a batch's counts without a Python
#: loop (CommandStats) and the register trace.
COLUMNS = _dtype("struct kv_event")


class Event(NamedTuple):
    """One command as the device saw it (the ring's record, decoded)."""

    seq: int
    t_ns: int
    kind: int  # an EventKind, never STEPS (runs are not events to listeners)
    cmd: int  # the ioctl number; for a STORE the weight's index
    pid: int  # the requester (0: in-process or a control)
    errno: int
    data: bytes  # payload in; GET_TELEMETRY: the reply
    writes: tuple[regs.RegWrite, ...]
    fault: int = 0  # the injected fault that fired (its id), or 0
    latency_us: int = 0  # injected latency
    service_ns: int = 0  # time the command held the device
    aux: int = 0  # the madvise advice it came through (tables.Advice), 0: the node


def writes_of(raw: tuple[Any, ...]) -> tuple[regs.RegWrite, ...]:
    reg_seq, nregs = raw[AT["reg_seq"]], raw[AT["nregs"]]
    return tuple(regs.RegWrite(reg_seq + j, raw[_REG_OFF + j], raw[_REG_VAL + j]) for j in range(nregs))


def decode(raw: tuple[Any, ...]) -> Event:
    a = AT
    return Event(raw[a["seq"]], raw[a["t_ns"]], raw[a["kind"]], raw[a["cmd"]], raw[a["pid"]],
                 raw[a["err"]], raw[a["data"]][:raw[a["size"]]], writes_of(raw), raw[a["fault"]],
                 raw[a["latency_us"]], raw[a["service_ns"]], raw[a["aux"]])


def log_command(ev: Event) -> None:
    """--trace: the command, decoded (its register writes follow from the
    register trace's observer)."""
    if ev.kind == EventKind.STORE:
        log.info("sysfs %s=%#x", abi.WEIGHT_FIELDS[ev.cmd], int.from_bytes(ev.data[:4], "little"))
        return
    if ev.kind != EventKind.IOCTL:
        log.info("%s", EventKind(ev.kind).name.lower())
        return
    if ev.aux:  # the command's own line follows, as an ioctl's would
        log.info("madvise MADV_KV_%s from pid %d:", Advice(ev.aux).name, ev.pid)
    command = abi.BY_NUMBER.get(ev.cmd)
    if command is None:
        log.info("ioctl %#x from pid %d: %s", ev.cmd, ev.pid, errno.errorcode.get(ev.errno, ev.errno))
        return
    fields: tuple[int, ...] = ()
    if command.direction & abi.IOC_WRITE and len(ev.data) == command.layout.size:
        fields = command.layout.codec.unpack(ev.data)
    args = ", ".join(f"{n}={v:#x}" for n, v in zip(command.layout.fields, fields))
    log.info("%s(%s)", command.short, args)
    if ev.errno or ev.fault:
        injected = f", fault {ev.fault}" if ev.fault else ""
        log.info("  -> %s (pid %d%s)", errno.errorcode.get(ev.errno, ev.errno) if ev.errno else "ok",
                 ev.pid, injected)


class CommandBatch:
    """Commands delivered together, in order: a slice of the ring's batch.
    A listener reads it during its ``commands`` call only (the buffer is
    reused by the next read): as numpy ``columns`` to count, or as decoded
    ``events()`` to look at each."""

    def __init__(self, raw: Any, columns: np.ndarray, start: int, end: int):
        self._raw, self.columns, self._start, self._end = raw, columns[start:end], start, end
        self._events: list[Event] | None = None

    def __len__(self) -> int:
        return self._end - self._start

    def rows(self) -> list[tuple[Any, ...]]:
        """The commands as EVENT unpacks them (fields by ``AT``): cheaper
        than events() for a listener that only re-packs them (a recorder)."""
        size, raw = EVENT.size, self._raw
        return [EVENT.unpack_from(raw, i * size) for i in range(self._start, self._end)]

    def events(self) -> list[Event]:
        if self._events is None:
            self._events = [decode(row) for row in self.rows()]
        return self._events
