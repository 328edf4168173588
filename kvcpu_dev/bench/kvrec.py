"""The recording format (``.kvrec``): every command that reached the device.

Written by the daemon (``kvcpu-dev --record FILE``, the ``record``
attribute, ``kvctl record start FILE``) from the event ring, after the
fast path has answered: recording costs the fast path nothing beyond the
ring it already fills.  Read by ``kvctl log`` and ``kvctl replay``, by
``kvcpu-eval --recording`` and by the pytest plugin.  No cffi and no numpy
here: kvctl imports this module.

Version 2 (what the daemon writes), all integers little-endian::

    file header (32 bytes, then meta)
      0   8  magic b"KVCPUREC"
      8   2  version (2)
     10   2  header length, meta included
     12   4  flags (0)
     16   8  CLOCK_REALTIME (ns) when the file was created
     24   8  CLOCK_MONOTONIC (ns) then: records' t_ns are on this clock
     32   .  meta: UTF-8 JSON object (format, creator)
    records, back to back, each a 16-byte frame and its body
      0   4  sync word b"\\x8eKVR": a record starts here
      4   4  body length L
      8   4  CRC-32 (zlib) of the body
     12   4  CRC-32 of the frame's first 12 bytes: a frame is recognised
             from its own 16 bytes, before its body is read
     16   L  body:
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

Version 1 (read, never written or appended to) is the same without the
sync word and the frame's CRC: each record is ``u32 L, u32 CRC-32 of the
body, body``.

A mark record opens and closes every recording session:
``{"mark": "start", "device": NAME, "telemetry": {...}, "model_config":
TOML or null}`` (the driver's state when recording began, so a replay can
check it starts from the same state) and ``{"mark": "stop", "events": N,
"lost": N}``.

Damage, as tcpdump and rr treat their files: nothing that reads or appends
to a recording rewrites or truncates a byte of it.  The records of
each batch the daemon drains are written by one ``write(2)`` on an
``O_APPEND`` descriptor, and while a recording is on the device holds at
most 256 answered commands not yet drained (recorder.RECORD_BACKLOG), so a
killed daemon loses at most those and the batch in hand, and a later
session appends after whatever the file ends with.  A reader checks every
record (frame, CRCs, and that its contents are what a writer produces:
``decode_body``), skips what fails, resynchronises on the next record that
passes (version 2: the next sync word whose frame checks; version 1: the
next offset where a whole record checks) and says how many bytes it
skipped in how many places (``Damage``).  A reader holds one record and a
bounded window of the file at a time, and refuses what is not a regular
file (a FIFO, /dev/zero) instead of waiting on it.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..device import abi
from ..device.regs import BAR0_SIZE
from ..device.tables import Advice

MAGIC = b"KVCPUREC"
VERSION = 2
#: Versions this reader reads; only VERSION is written or appended to.
READABLE = (1, 2)
HEADER = struct.Struct("<8sHHIQQ")
#: A header claiming more than this is damaged: records are looked for after
#: its fixed part.
MAX_HEADER = 1 << 16
SYNC = b"\x8eKVR"
FRAME = struct.Struct("<4sIII")  # sync, body length, body CRC, frame CRC
FRAME_V1 = struct.Struct("<II")  # body length, body CRC
BODY = struct.Struct("<QQIIiIIQBBHB")
WRITE = struct.Struct("<QIQ")
#: The optional last field: the madvise advice a command came through.
ADVICE = struct.Struct("<I")
ADVICES = frozenset(int(a) for a in Advice)
#: A body larger than this is not a record of ours (a corrupt length).
MAX_BODY = BODY.size + 65535 + 255 * WRITE.size + 255 + ADVICE.size

KIND_IOCTL, KIND_STORE, KIND_RESET, KIND_UNPLUG, KIND_REPLUG = 1, 2, 3, 4, 5
KIND_MARK = 100
KIND_NAMES = {KIND_IOCTL: "ioctl", KIND_STORE: "store", KIND_RESET: "reset",
              KIND_UNPLUG: "unplug", KIND_REPLUG: "replug", KIND_MARK: "mark"}

#: What the fast path records (fastpath.h): payloads of at most KV_EV_DATA
#: bytes, at most KV_EV_REGS register writes per command, six weights.
MAX_DATA = 96
MAX_WRITES = 6
MAX_ERRNO = 4095
U64_MAX = (1 << 64) - 1

#: kvctl's names for the commands (faults.py uses the same), and back.
SHORT = {abi.KV_CPU_STEP_ADVANCE: "STEP", abi.KV_CPU_MARK_HOT: "HOT", abi.KV_CPU_EVICT: "EVICT",
         abi.KV_CPU_PREFETCH: "PREFETCH", abi.KV_CPU_SHARE_PREFIX: "SHARE",
         abi.KV_CPU_SET_WEIGHTS: "WEIGHTS", abi.KV_CPU_GET_TELEMETRY: "TELEMETRY"}
_BY_NAME = {name: number for number, name in SHORT.items()}
_BY_NAME.update({c.short: c.number for c in abi.COMMANDS.values()})
_BY_NAME.update({c.name: c.number for c in abi.COMMANDS.values()})


class FormatError(ValueError):
    """Not a recording, or a version this reader does not know."""


class BadRecord(ValueError):
    """A record whose frame checks but whose contents no writer produces."""


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
        """A mark record's JSON ({} for anything else)."""
        if self.kind != KIND_MARK:
            return {}
        try:
            meta = json.loads(self.data)
        except (ValueError, RecursionError):
            return {}
        return meta if isinstance(meta, dict) else {}

    @property
    def reply(self) -> bytes:
        """What the client got back (GET_TELEMETRY's 96 bytes), else b''."""
        if (self.kind == KIND_IOCTL and self.cmd == abi.KV_CPU_GET_TELEMETRY and not self.errno
                and len(self.data) == abi.TELEMETRY_INFO.size):
            return self.data
        return b""

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


def header_bytes(meta: dict[str, Any] | None = None, version: int = VERSION) -> bytes:
    blob = json.dumps({"format": "kvcpu-record", "version": version, **(meta or {})},
                      sort_keys=True).encode()
    return HEADER.pack(MAGIC, version, HEADER.size + len(blob), 0,
                       time.clock_gettime_ns(time.CLOCK_REALTIME),
                       time.clock_gettime_ns(time.CLOCK_MONOTONIC)) + blob


def frame(body: bytes, version: int = VERSION) -> bytes:
    """``body`` framed as a record of ``version`` (1 only for tests)."""
    if version == 1:
        return FRAME_V1.pack(len(body), zlib.crc32(body)) + body
    head = struct.pack("<4sII", SYNC, len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def encode(seq: int, t_ns: int, kind: int, cmd: int, pid: int, err: int, data: bytes,
           writes: Sequence[tuple[int, int, int]] = (), fault: int = 0, latency_us: int = 0, service_ns: int = 0,
           comm: bytes = b"", advice: int = 0, version: int = VERSION) -> bytes:
    """One framed record.  ``writes``: (seq, offset, value) triples, or
    regs.RegWrite, which is the same tuple."""
    comm = comm[:255]
    body = b"".join((
        BODY.pack(seq, t_ns, cmd & 0xFFFF_FFFF, pid & 0xFFFF_FFFF, err, fault, latency_us,
                  service_ns, kind, len(writes), len(data), len(comm)),
        data, *(WRITE.pack(*w) for w in writes), comm, ADVICE.pack(advice) if advice else b""))
    return frame(body, version)


def mark(kind: str, seq: int = 0, **meta: Any) -> bytes:
    blob = json.dumps({"mark": kind, **meta}, sort_keys=True).encode()
    return encode(seq, time.monotonic_ns(), KIND_MARK, 0, 0, 0, blob[:65535])


# -- checking a record ---------------------------------------------------------------


def decode_body(body: bytes) -> Record:
    """The record in ``body``, if it is one a writer produces; BadRecord
    (one line) otherwise: lengths that do not add up, an unknown kind, an
    errno past 4095, more register writes than a command makes or writes
    outside BAR0, a payload of the wrong size for its command, a store of a
    seventh weight, a mark that is not the JSON object a session starts or
    stops with."""
    if len(body) < BODY.size:
        raise BadRecord(f"a body of {len(body)} bytes")
    (seq, t_ns, cmd, pid, err, fault, latency_us, service_ns, kind, nwrites,
     data_len, comm_len) = BODY.unpack_from(body)
    fields = BODY.size + data_len + nwrites * WRITE.size + comm_len
    if fields + ADVICE.size == len(body):
        advice = ADVICE.unpack_from(body, fields)[0]
        if kind != KIND_IOCTL or advice not in ADVICES:
            raise BadRecord(f"advice {advice} on a {KIND_NAMES.get(kind, kind)} record")
    elif fields == len(body):
        advice = 0
    else:
        raise BadRecord("its lengths do not add up")
    if not 0 <= err <= MAX_ERRNO:
        raise BadRecord(f"errno {err}")
    pos = BODY.size
    data = bytes(body[pos:pos + data_len])
    pos += data_len
    writes = tuple(WRITE.unpack_from(body, pos + i * WRITE.size) for i in range(nwrites))
    pos += nwrites * WRITE.size
    if any(offset >= BAR0_SIZE or offset % 8 for _, offset, _ in writes):
        raise BadRecord("a register write outside BAR0")
    _check_kind(kind, cmd, err, data, nwrites)
    comm = bytes(body[pos:pos + comm_len]).decode(errors="replace")
    return Record(seq, t_ns, kind, cmd, pid, err, data, writes, fault, latency_us, service_ns, comm, advice)


def _check_kind(kind: int, cmd: int, err: int, data: bytes, nwrites: int) -> None:
    if kind == KIND_IOCTL:
        command = abi.BY_NUMBER.get(cmd)
        if len(data) > MAX_DATA or nwrites > MAX_WRITES:
            raise BadRecord(f"ioctl {cmd:#x} with {len(data)} bytes and {nwrites} register writes")
        if not err and (command is None or len(data) != command.layout.size):
            raise BadRecord(f"a successful ioctl {cmd:#x} with {len(data)} bytes of payload")
        if err and nwrites:
            raise BadRecord("a failed ioctl that wrote registers")
    elif kind == KIND_STORE:
        if cmd >= len(abi.WEIGHT_FIELDS) or len(data) != 4 or nwrites > MAX_WRITES or err:
            raise BadRecord(f"a store of weight {cmd} with {len(data)} bytes")
    elif kind in (KIND_RESET, KIND_UNPLUG, KIND_REPLUG):
        if cmd or data or nwrites or err:
            raise BadRecord(f"a {KIND_NAMES[kind]} with a payload")
    elif kind == KIND_MARK:
        if nwrites or err:
            raise BadRecord("a mark with register writes")
        check_mark(data)
    else:
        raise BadRecord(f"unknown kind {kind}")


#: What the recorder writes in each mark (recorder.RecordControl).
_MARK_KEYS = {"start": {"mark", "device", "telemetry", "model_config"},
              "stop": {"mark", "device", "events", "lost"}}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def check_mark(data: bytes) -> dict[str, Any]:
    """A mark's JSON, if it is what the recorder writes (BadRecord if not)."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRecord("a mark that is not JSON") from None
    if not isinstance(meta, dict):
        raise BadRecord("a mark that is not a JSON object")
    kind = meta.get("mark")
    known = _MARK_KEYS.get(kind) if isinstance(kind, str) else None
    if known is None:
        raise BadRecord("a mark that neither starts nor stops a session")
    if not set(meta) <= known:
        raise BadRecord(f"a mark with keys no writer writes: {sorted(set(meta) - known)[:3]}")
    device = meta.get("device")
    if device is not None and not isinstance(device, str):
        raise BadRecord("a mark whose device is not a name")
    if meta.get("mark") == "start":
        telemetry = meta.get("telemetry")
        if not (isinstance(telemetry, dict) and set(telemetry) == set(abi.TELEMETRY_FIELDS)
                and all(_count(v) for v in telemetry.values())):
            raise BadRecord("a start mark without the driver's telemetry")
        config = meta.get("model_config")
        if config is not None and not isinstance(config, str):
            raise BadRecord("a start mark whose model configuration is not text")
    elif not all(_count(meta.get(k, 0)) for k in ("events", "lost")):
        raise BadRecord("a stop mark whose counts are not counts")
    return meta


# -- reading -----------------------------------------------------------------------


@dataclass
class Header:
    version: int
    wall_ns: int
    mono_ns: int
    meta: dict[str, Any]
    size: int  # where the records start
    #: Header bytes that could not be read (a damaged length or metadata).
    damaged: int = 0


@dataclass
class Damage:
    """What a reader skipped: bytes, in how many places (adjacent skips are
    one place), how many of them were whole records with contents no writer
    produces, and how many bytes at the end were a record cut short."""

    skipped: int = 0
    places: int = 0
    invalid: int = 0
    at_end: int = 0
    #: Where a reader stopped resynchronising (too much damage to search in
    #: bounded time); the rest of the file is counted in ``skipped``.
    gave_up_at: int | None = None
    _run: tuple[int, int] = (-1, -1)

    def skip(self, start: int, end: int) -> None:
        if end <= start:
            return
        run_start, run_end = self._run
        if start != run_end:
            self.places += 1
            run_start = start
        self.skipped += end - start
        self._run = (run_start, end)

    def finish(self, eof: int) -> None:
        """The skip that reaches the end is a record cut short if it is
        no longer than one record."""
        run_start, run_end = self._run
        if run_end == eof and self.gave_up_at is None and eof - run_start <= FRAME.size + MAX_BODY:
            self.at_end = eof - run_start

    def note(self) -> str:
        """One line, or '' when nothing was skipped."""
        if not self.skipped:
            return ""
        out = f"skipped {self.skipped} bytes in {self.places} place{'s' if self.places != 1 else ''}"
        if self.invalid:
            out += (f", {self.invalid} record{'s' if self.invalid != 1 else ''} of them with contents "
                    "no writer produces")
        if self.at_end:
            out += f"; the last {self.at_end} are a record cut short (a crash or a full disk mid-write)"
        if self.gave_up_at is not None:
            out += f"; too damaged to search past byte {self.gave_up_at}, the rest was not read"
        return out


@dataclass
class Recording:
    """A whole file, read (small files: tests, the pytest plugin).  Larger
    ones are read record by record with ``Reader``."""

    header: Header
    records: list[Record] = field(default_factory=list)
    damage: Damage = field(default_factory=Damage)

    def commands(self) -> list[Record]:
        return [r for r in self.records if r.kind == KIND_IOCTL]


def read_header(f: BinaryIO) -> Header:
    """The header at the start of ``f``.  FormatError for what is not a
    recording of a version we read; a damaged length or metadata is
    reported in ``damaged``, and the records are looked for after it."""
    raw = f.read(HEADER.size)
    if len(raw) < len(MAGIC) or raw[:8] != MAGIC:
        raise FormatError("not a kvcpu recording (bad magic)")
    if len(raw) < HEADER.size:
        raise FormatError("truncated header")
    magic, version, size, flags, wall, mono = HEADER.unpack(raw)
    if version not in READABLE:
        raise FormatError(f"recording format version {version}; this reader knows "
                          f"{', '.join(map(str, READABLE))}")
    if not HEADER.size <= size <= MAX_HEADER:
        return Header(version, wall, mono, {}, HEADER.size, damaged=1)
    blob = f.read(size - HEADER.size)
    if len(blob) != size - HEADER.size:
        return Header(version, wall, mono, {}, HEADER.size, damaged=1)
    try:
        meta = json.loads(blob) if blob else {}
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        return Header(version, wall, mono, {}, size, damaged=len(blob))
    return Header(version, wall, mono, meta, size)


#: How much of the file a reader holds at a time.
CHUNK = 1 << 20
#: Where a version 1 record may start: a length from BODY.size to MAX_BODY
#: (little-endian), so resynchronising searches at C speed, not per byte.
_V1_LENGTH = re.compile(
    rb"(?=(?:[\x31-\xff][\x00]|[\x00-\xff][\x01-\xff])\x00\x00|(?:[\x00-\xff][\x00-\x14]|[\x00-\x1f]\x15)\x01\x00)",
    re.DOTALL)
_V2_SYNC = re.compile(re.escape(SYNC))
assert MAX_BODY == 0x1151F, "update _V1_LENGTH"


class _Window:
    """The file from ``keep`` on, read CHUNK at a time: bounded memory
    whatever the file's size.  The scan moves ``keep`` forward as it goes;
    nothing before it is looked at again."""

    def __init__(self, f: BinaryIO, base: int):
        self.f = f
        self.base = self.keep = base
        self.buf = b""
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def have(self, pos: int, n: int) -> bool:
        """Whether bytes [pos, pos + n) exist (reading on as needed)."""
        if pos + n <= self.end:
            return True
        if self.keep > self.base:
            self.buf = self.buf[self.keep - self.base:]
            self.base = self.keep
        while pos + n > self.end and not self.eof:
            more = self.f.read(max(CHUNK, pos + n - self.end))
            if more:
                self.buf += more
            else:
                self.eof = True
        return pos + n <= self.end

    def get(self, pos: int, n: int) -> bytes:
        return self.buf[pos - self.base:pos - self.base + n]

    def search(self, pattern: re.Pattern[bytes], pos: int) -> int:
        """The next offset at or after ``pos`` where ``pattern`` (4 bytes)
        matches, or -1 at the end of the file."""
        while True:
            m = pattern.search(self.buf, pos - self.base)
            if m is not None:
                return m.start() + self.base
            self.keep = pos = max(pos, self.end - 3)  # a match may straddle the refill
            if not self.have(self.end, 1):
                return -1


class Reader:
    """A recording, record by record (see the module doc on damage).

    ``open`` refuses what is not a regular file.  Iterating yields every
    record that checks; ``damage`` says what was skipped (complete once
    the iteration is).  Resynchronising costs at most ``budget`` bytes of
    failed CRCs (256 MiB plus eight times the file): a file built to make the
    search quadratic is read up to there and the rest counted as skipped."""

    def __init__(self, path: str | os.PathLike[str]):
        fd = open_regular(path)
        self._f: BinaryIO = os.fdopen(fd, "rb")
        try:
            self.size = os.fstat(fd).st_size
            self.header = read_header(self._f)
        except BaseException:
            self._f.close()
            raise
        self.damage = Damage()
        if self.header.size > HEADER.size and self.header.damaged:  # its metadata; a bad length is
            self.damage.skip(HEADER.size, self.header.size)          # searched past like any damage
        self.budget = 256 * CHUNK + 8 * self.size

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[Record]:
        v1 = self.header.version == 1
        head, pattern = (FRAME_V1.size, _V1_LENGTH) if v1 else (FRAME.size, _V2_SYNC)
        start = self.header.size
        self._f.seek(start)
        w = _Window(self._f, start)
        pos, spent, damage = start, 0, self.damage
        while w.have(pos, 1):
            w.keep = pos
            length, crc = _frame_at(w, pos, v1)
            if length:
                body = w.get(pos + head, length)
                if zlib.crc32(body) == crc:
                    try:
                        record = decode_body(body)
                    except BadRecord:
                        damage.skip(pos, pos + head + length)
                        damage.invalid += 1
                    else:
                        yield record
                    pos += head + length
                    continue
                spent += length
                if spent > self.budget:
                    damage.gave_up_at = pos
                    w.have(pos, self.size)  # to the end, for its size
                    damage.skip(pos, max(w.end, self.size))
                    break
            nxt = w.search(pattern, pos + 1)
            if nxt < 0:
                damage.skip(pos, w.end)
                pos = w.end
                break
            damage.skip(pos, nxt)
            pos = nxt
        damage.finish(w.end)


def _frame_at(w: _Window, pos: int, v1: bool) -> tuple[int, int]:
    """(body length, body CRC) of a frame at ``pos`` whose body is all
    there, or (0, 0)."""
    if v1:
        if not w.have(pos, FRAME_V1.size):
            return 0, 0
        length, crc = FRAME_V1.unpack(w.get(pos, FRAME_V1.size))
        head = FRAME_V1.size
    else:
        if not w.have(pos, FRAME.size):
            return 0, 0
        raw = w.get(pos, FRAME.size)
        sync, length, crc, frame_crc = FRAME.unpack(raw)
        if sync != SYNC or zlib.crc32(raw[:12]) != frame_crc:
            return 0, 0
        head = FRAME.size
    if not BODY.size <= length <= MAX_BODY or not w.have(pos + head, length):
        return 0, 0
    return length, crc


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read descriptor on ``path`` if it is a regular file: a FIFO or a
    device would make a reader wait or read forever.  FormatError if not."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a directory" if stat.S_ISDIR(mode) else "special")
        raise FormatError(f"not a regular file ({kind})")
    os.set_blocking(fd, True)
    return fd


def torn_tail(fd: int, start: int, size: int) -> int | None:
    """How many bytes at the end of a version 2 file follow its last whole
    record: 0 if it ends on a record, None if its last 2 records' worth of
    bytes hold no whole record.  Reads only that much (an append checks the
    file it adds to without reading it all)."""
    if size <= start:
        return 0
    low = max(start, size - 2 * (FRAME.size + MAX_BODY))
    tail = os.pread(fd, size - low, low)
    best: int | None = None
    p = len(tail)
    while (p := tail.rfind(SYNC, 0, p)) >= 0:
        raw = tail[p:p + FRAME.size]
        if len(raw) == FRAME.size:
            sync, length, crc, frame_crc = FRAME.unpack(raw)
            end = p + FRAME.size + length
            if (zlib.crc32(raw[:12]) == frame_crc and end <= len(tail)
                    and zlib.crc32(tail[p + FRAME.size:end]) == crc):
                best = len(tail) - end
                break
    if best is None and low == start:
        return len(tail)  # no whole record after the header
    return best


def read(path: str | os.PathLike[str]) -> Recording:
    """The whole file in memory: for small files (tests, the plugin)."""
    with Reader(path) as reader:
        records = list(reader)
    return Recording(reader.header, records, reader.damage)


# -- text -------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Control characters escaped, as tcpdump prints what it did not write."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(r: Record, base_ns: int = 0) -> str:
    """One line, tcpdump style: time (flush left, as tcpdump prints it: a
    right-aligned time made the first line look blank), pid/comm,
    command(fields) -> result."""
    t = (r.t_ns - base_ns) / 1e9
    who = f"{r.pid}/{_printable(r.comm)}" if r.comm else str(r.pid)
    if r.kind == KIND_MARK:
        meta = r.meta
        rest = " ".join(f"{k}={_printable(str(meta[k]))}" for k in ("device", "events", "lost") if k in meta)
        return f"{t:<12.6f} -- recording {_printable(str(meta.get('mark', '?')))} {rest}".rstrip()
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
