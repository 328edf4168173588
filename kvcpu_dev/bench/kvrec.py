"""The recording format (``.kvrec``): every command that reached the device.

Written by the daemon (``kvcpu-dev --record FILE``, the ``record``
attribute, ``kvctl record start FILE``) from the event ring, after the
fast path has answered: recording costs the fast path nothing beyond the
ring it already fills.  Read by ``kvctl log`` and ``kvctl replay`` and by
the pytest plugin.  No cffi and no numpy here: kvctl imports this module.

Version 1, all integers little-endian::

    file header (32 bytes, then meta)
      0   8  magic b"KVCPUREC"
      8   2  version (1)
     10   2  header length, meta included
     12   4  flags (0)
     16   8  CLOCK_REALTIME (ns) when the file was created
     24   8  CLOCK_MONOTONIC (ns) then: records' t_ns are on this clock
     32   .  meta: UTF-8 JSON object (format, creator)
    records, back to back
      0   4  body length L
      4   4  CRC-32 (zlib) of the body
      8   L  body:
             0  8 seq         the ring's sequence number (a gap: events lost)
             8  8 t_ns        CLOCK_MONOTONIC when the command ran
            16  4 cmd         ioctl number; STORE: the weight's index
            20  4 pid         the requester (0: in-process, a control)
            24  4 errno       signed; 0 for success
            28  4 fault       id of the injected fault that fired, or 0
            32  4 latency_us  injected latency
            36  8 service_ns  time the command held the device
            44  1 kind        1 ioctl, 2 store, 3 reset, 4 unplug, 5 replug,
                              100 mark (data: JSON, see below)
            45  1 nwrites     register writes that follow the data
            46  2 data_len    payload in; GET_TELEMETRY: the 96-byte reply;
                              STORE: the u32 value
            48  1 comm_len    the requester's command name (/proc/PID/comm,
                              best effort, cached per pid)
            49  .  data, then nwrites x (u64 BAR0 write seq, u32 offset,
                   u64 value), then comm, then (optional) u32 advice: a
                   command that came through madvise (kvcpu-dev run) ends
                   with its advice, 104-106; a reader of the body's fields
                   alone skips it

A mark record opens and closes every recording session:
``{"mark": "start", "device": NAME, "telemetry": {...}, "model_config":
TOML or null}`` (the driver's state when recording began, so a replay can
check it starts from the same state) and ``{"mark": "stop", "events": N,
"lost": N}``.

Crash tolerance: each record is written by one ``write(2)`` on an
``O_APPEND`` descriptor as soon as it is drained, so a killed daemon loses
only what its ring still held; a torn last record (a crash or a full disk
in the middle of a write) fails its length or CRC check and is skipped by
the reader, and truncated away before a later session appends.  Versions
are not mixed in one file: a reader refuses a version it does not know.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..device import abi

MAGIC = b"KVCPUREC"
VERSION = 1
HEADER = struct.Struct("<8sHHIQQ")
FRAME = struct.Struct("<II")
BODY = struct.Struct("<QQIIiIIQBBHB")
WRITE = struct.Struct("<QIQ")
#: The optional last field: the madvise advice a command came through.
ADVICE = struct.Struct("<I")
#: A body larger than this is not a record of ours (a corrupt length).
MAX_BODY = BODY.size + 65535 + 255 * WRITE.size + 255 + ADVICE.size

KIND_IOCTL, KIND_STORE, KIND_RESET, KIND_UNPLUG, KIND_REPLUG = 1, 2, 3, 4, 5
KIND_MARK = 100
KIND_NAMES = {KIND_IOCTL: "ioctl", KIND_STORE: "store", KIND_RESET: "reset",
              KIND_UNPLUG: "unplug", KIND_REPLUG: "replug", KIND_MARK: "mark"}

#: kvctl's names for the commands (faults.py uses the same), and back.
SHORT = {abi.KV_CPU_STEP_ADVANCE: "STEP", abi.KV_CPU_MARK_HOT: "HOT", abi.KV_CPU_EVICT: "EVICT",
         abi.KV_CPU_PREFETCH: "PREFETCH", abi.KV_CPU_SHARE_PREFIX: "SHARE",
         abi.KV_CPU_SET_WEIGHTS: "WEIGHTS", abi.KV_CPU_GET_TELEMETRY: "TELEMETRY"}
_BY_NAME = {name: number for number, name in SHORT.items()}
_BY_NAME.update({c.short: c.number for c in abi.COMMANDS.values()})
_BY_NAME.update({c.name: c.number for c in abi.COMMANDS.values()})


class FormatError(ValueError):
    """Not a recording, or a version this reader does not know."""


def command_number(name: str) -> int:
    """STEP, STEP_ADVANCE or KV_CPU_STEP_ADVANCE (any case) -> its number."""
    try:
        return _BY_NAME[name.upper()]
    except KeyError:
        raise ValueError(f"unknown command {name!r} (one of {', '.join(SHORT.values())})") from None


@dataclass(frozen=True)
class Record:
    """One record as stored.  ``writes`` are (BAR0 seq, offset, value)."""

    seq: int
    t_ns: int
    kind: int
    cmd: int
    pid: int
    errno: int
    data: bytes
    writes: tuple[tuple[int, int, int], ...] = ()
    fault: int = 0
    latency_us: int = 0
    service_ns: int = 0
    comm: str = ""
    advice: int = 0  # madvise advice it came through (kvcpu-dev run), 0: the node

    # -- decoding ------------------------------------------------------------------
    @property
    def name(self) -> str:
        """STEP, HOT, ... for an ioctl; store/reset/unplug/replug/mark otherwise."""
        if self.kind == KIND_IOCTL:
            return SHORT.get(self.cmd, f"{self.cmd:#x}")
        if self.kind == KIND_STORE:
            return "store"
        return KIND_NAMES.get(self.kind, str(self.kind))

    @property
    def fields(self) -> dict[str, int]:
        """The payload's struct fields (the reply's for TELEMETRY); for a
        store, {weight: value}; empty when there is none or it is short."""
        if self.kind == KIND_STORE:
            if self.cmd < len(abi.WEIGHT_FIELDS) and len(self.data) >= 4:
                return {abi.WEIGHT_FIELDS[self.cmd]: int.from_bytes(self.data[:4], "little")}
            return {}
        command = abi.BY_NUMBER.get(self.cmd) if self.kind == KIND_IOCTL else None
        if command is None or len(self.data) != command.layout.size:
            return {}
        return dict(zip(command.layout.fields, command.layout.codec.unpack(self.data)))

    @property
    def meta(self) -> dict[str, Any]:
        """A mark record's JSON."""
        if self.kind != KIND_MARK:
            return {}
        try:
            meta: dict[str, Any] = json.loads(self.data)
        except ValueError:
            return {}
        return meta

    @property
    def reply(self) -> bytes:
        """What the client got back (GET_TELEMETRY's 96 bytes), else b''."""
        return self.data if self.cmd == abi.KV_CPU_GET_TELEMETRY and self.kind == KIND_IOCTL else b""

    def __getattr__(self, key: str) -> Any:  # record.step, record.va, ...
        if key.startswith("_"):
            raise AttributeError(key)
        f = self.fields
        if key in f:
            return f[key]
        raise AttributeError(f"{self.name} record has no field {key!r}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq, "t_ns": self.t_ns, "kind": KIND_NAMES.get(self.kind, self.kind),
            "command": self.name, "cmd": self.cmd, "pid": self.pid, "comm": self.comm,
            "errno": errno_mod.errorcode.get(self.errno, self.errno) if self.errno else 0,
        }
        if self.kind == KIND_MARK:
            out["meta"] = self.meta
        else:
            out["fields"] = self.fields
            out["data"] = self.data.hex()
            out["writes"] = [{"seq": s, "offset": o, "value": v} for s, o, v in self.writes]
        if self.fault:
            out["fault"] = self.fault
        if self.latency_us:
            out["latency_us"] = self.latency_us
        if self.advice:
            out["via"] = f"madvise({self.advice})"
        out["service_ns"] = self.service_ns
        return out


# -- writing -----------------------------------------------------------------------


def header_bytes(meta: dict[str, Any] | None = None) -> bytes:
    blob = json.dumps({"format": "kvcpu-record", "version": VERSION, **(meta or {})},
                      sort_keys=True).encode()
    return HEADER.pack(MAGIC, VERSION, HEADER.size + len(blob), 0,
                       time.clock_gettime_ns(time.CLOCK_REALTIME),
                       time.clock_gettime_ns(time.CLOCK_MONOTONIC)) + blob


def encode(seq: int, t_ns: int, kind: int, cmd: int, pid: int, err: int, data: bytes,
           writes: Sequence[tuple[int, int, int]] = (), fault: int = 0, latency_us: int = 0, service_ns: int = 0,
           comm: bytes = b"", advice: int = 0) -> bytes:
    """One framed record.  ``writes``: (seq, offset, value) triples, or
    regs.RegWrite, which is the same tuple."""
    comm = comm[:255]
    body = b"".join((
        BODY.pack(seq, t_ns, cmd & 0xFFFF_FFFF, pid & 0xFFFF_FFFF, err, fault, latency_us,
                  service_ns, kind, len(writes), len(data), len(comm)),
        data, *(WRITE.pack(*w) for w in writes), comm, ADVICE.pack(advice) if advice else b""))
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def mark(kind: str, seq: int = 0, **meta: Any) -> bytes:
    blob = json.dumps({"mark": kind, **meta}, sort_keys=True).encode()
    return encode(seq, time.monotonic_ns(), KIND_MARK, 0, 0, 0, blob[:65535])


# -- reading -----------------------------------------------------------------------


@dataclass
class Header:
    version: int
    wall_ns: int
    mono_ns: int
    meta: dict[str, Any]
    size: int


@dataclass
class Recording:
    """A whole file, read.  ``torn``: bytes at the end that do not form a
    whole, valid record (a crash mid-write), which were skipped."""

    header: Header
    records: list[Record] = field(default_factory=list)
    torn: int = 0
    good_end: int = 0  # where the last valid record ends

    def commands(self) -> list[Record]:
        return [r for r in self.records if r.kind == KIND_IOCTL]


def read_header(f: BinaryIO) -> Header:
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size or raw[:8] != MAGIC:
        raise FormatError("not a kvcpu recording (bad magic)")
    magic, version, size, flags, wall, mono = HEADER.unpack(raw)
    if version != VERSION:
        raise FormatError(f"recording format version {version}; this reader knows {VERSION}")
    if size < HEADER.size:
        raise FormatError("corrupt header length")
    blob = f.read(size - HEADER.size)
    if len(blob) != size - HEADER.size:
        raise FormatError("truncated header")
    try:
        meta = json.loads(blob) if blob else {}
    except ValueError:
        raise FormatError("corrupt header metadata") from None
    return Header(version, wall, mono, meta, size)


def decode_body(body: bytes) -> Record:
    (seq, t_ns, cmd, pid, err, fault, latency_us, service_ns, kind, nwrites,
     data_len, comm_len) = BODY.unpack_from(body)
    pos = BODY.size
    data = body[pos:pos + data_len]
    pos += data_len
    writes = tuple(WRITE.unpack_from(body, pos + i * WRITE.size) for i in range(nwrites))
    pos += nwrites * WRITE.size
    comm = body[pos:pos + comm_len].decode(errors="replace")
    pos += comm_len
    advice = ADVICE.unpack_from(body, pos)[0] if len(body) >= pos + ADVICE.size else 0
    return Record(seq, t_ns, kind, cmd, pid, err, bytes(data), writes, fault, latency_us,
                  service_ns, comm, advice)


def iter_records(f: BinaryIO, start: int) -> Iterator[tuple[Record | None, int]]:
    """(record, end offset) for each valid record; a final (None, offset of
    the first bad byte) if the file ends in a torn or corrupt record."""
    f.seek(start)
    pos = start
    while True:
        frame = f.read(FRAME.size)
        if not frame:
            return
        if len(frame) < FRAME.size:
            yield None, pos
            return
        length, crc = FRAME.unpack(frame)
        body = f.read(length) if BODY.size <= length <= MAX_BODY else b""
        if len(body) != length or zlib.crc32(body) != crc:
            yield None, pos
            return
        pos += FRAME.size + length
        yield decode_body(body), pos


def read(path: str | os.PathLike[str]) -> Recording:
    with open(path, "rb") as f:
        header = read_header(f)
        rec = Recording(header, good_end=header.size)
        for record, end in iter_records(f, header.size):
            if record is None:
                rec.torn = os.fstat(f.fileno()).st_size - end
                break
            rec.records.append(record)
            rec.good_end = end
    return rec


# -- text -------------------------------------------------------------------------


def describe(r: Record, base_ns: int = 0) -> str:
    """One line, tcpdump style: time (flush left, as tcpdump prints it: a
    right-aligned time made the first line look blank), pid/comm,
    command(fields) -> result."""
    t = (r.t_ns - base_ns) / 1e9
    who = f"{r.pid}/{r.comm}" if r.comm else str(r.pid)
    if r.kind == KIND_MARK:
        meta = r.meta
        rest = " ".join(f"{k}={v}" for k, v in meta.items() if k not in ("mark", "telemetry", "model_config"))
        return f"{t:<12.6f} -- recording {meta.get('mark', '?')} {rest}".rstrip()
    f = r.fields
    if r.kind == KIND_IOCTL and r.cmd == abi.KV_CPU_GET_TELEMETRY:
        args = ""
        shown = {k: f[k] for k in ("current_step", "step_count") if k in f}
        result = "ok " + " ".join(f"{k}={v}" for k, v in shown.items()) if not r.errno else ""
    else:
        args = ", ".join(f"{k}={v:#x}" if k == "va" else f"{k}={v}" for k, v in f.items())
        result = "ok"
    if r.errno:
        result = errno_mod.errorcode.get(r.errno, str(r.errno))
    extra = ""
    if r.fault:
        extra += f" [fault {r.fault}]"
    if r.latency_us:
        extra += f" [+{r.latency_us}us]"
    if r.advice:
        extra += f" [via madvise({r.advice})]"
    if r.kind == KIND_IOCTL:
        what = f"{r.name}({args})"
    elif r.kind == KIND_STORE:
        what = "sysfs " + " ".join(f"{k}={v}" for k, v in f.items())
    else:
        what = r.name
    seq = f"#{r.seq}"
    return f"{t:<12.6f} {seq:>7} {who:<16} {what} -> {result.strip()}{extra}".rstrip()
