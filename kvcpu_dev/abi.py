"""The device's ABI, read from the C header ``uapi/linux/kv_cpu.h``.

The header is the single source of truth: struct layouts come from cffi
parsing the header's own struct definitions, and the ioctl numbers from
evaluating its ``_IOW``/``_IOR`` lines with the Linux generic encoding.  A
test compiles a C program against the same header and compares.
"""

from __future__ import annotations

import pathlib
import re
import struct
from typing import NamedTuple

import cffi

# kvcpu_dev/uapi links to the repository's uapi/ (and is copied on install).
HEADER = pathlib.Path(__file__).with_name("uapi") / "linux" / "kv_cpu.h"

# Linux generic _IOC encoding (include/uapi/asm-generic/ioctl.h).
IOC_NRBITS, IOC_TYPEBITS, IOC_SIZEBITS = 8, 8, 14
IOC_NRSHIFT = 0
IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS
IOC_NONE, IOC_WRITE, IOC_READ = 0, 1, 2
_DIRS = {"_IO": IOC_NONE, "_IOW": IOC_WRITE, "_IOR": IOC_READ, "_IOWR": IOC_READ | IOC_WRITE}


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    return (
        (direction << IOC_DIRSHIFT)
        | (type_ << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


def ioc_size(cmd: int) -> int:
    return (cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)


def ioc_dir(cmd: int) -> int:
    return cmd >> IOC_DIRSHIFT


class Layout(NamedTuple):
    """One struct: its fields in order, its size, and a ``struct.Struct``
    that packs it (derived from the cffi layout, so it cannot drift)."""

    name: str
    fields: tuple[str, ...]
    offsets: tuple[int, ...]
    size: int
    codec: struct.Struct


class Command(NamedTuple):
    name: str  # KV_CPU_STEP_ADVANCE
    number: int
    direction: int
    nr: int
    layout: Layout

    @property
    def short(self) -> str:  # STEP_ADVANCE
        return self.name.removeprefix("KV_CPU_")


_STRUCT_RE = re.compile(r"struct\s+(kv_cpu_\w+)\s*\{[^}]*\};", re.S)
_MAGIC_RE = re.compile(r"#define\s+KV_CPU_MAGIC\s+'(.)'")
_IOCTL_RE = re.compile(
    r"#define\s+(KV_CPU_\w+)\s+(_IO[RW]*)\(\s*KV_CPU_MAGIC\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*,"
    r"\s*struct\s+(kv_cpu_\w+)\s*\)"
)
_FORMATS = {"uint64_t": "Q", "uint32_t": "I", "uint16_t": "H", "uint8_t": "B"}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _layout(ffi: cffi.FFI, name: str) -> Layout:
    ctype = ffi.typeof(f"struct {name}")
    fields = tuple(ctype.fields)
    fmt, pos = "<", 0
    for _fname, field in fields:
        if field.offset != pos:  # padding would need explicit pad bytes
            fmt += f"{field.offset - pos}x"
        fmt += _FORMATS[field.type.cname]
        pos = field.offset + ffi.sizeof(field.type)
    size = ffi.sizeof(ctype)
    fmt += f"{size - pos}x" if size > pos else ""
    codec = struct.Struct(fmt)
    assert codec.size == size, (name, fmt, size)
    return Layout(name, tuple(f for f, _ in fields), tuple(f.offset for _, f in fields), size, codec)


def load(header: pathlib.Path = HEADER) -> tuple[int, dict[str, Layout], dict[str, Command]]:
    """Parse the header: (magic, layouts by struct name, commands by name)."""
    text = _strip_comments(header.read_text())
    ffi = cffi.FFI()
    ffi.cdef("".join(f"typedef {c} {t};" for t, c in (
        ("__u64", "uint64_t"), ("__u32", "uint32_t"), ("__u16", "uint16_t"), ("__u8", "uint8_t"))))
    ffi.cdef("\n".join(m.group(0) for m in _STRUCT_RE.finditer(text)))
    layouts = {m.group(1): _layout(ffi, m.group(1)) for m in _STRUCT_RE.finditer(text)}
    magic_match = _MAGIC_RE.search(text)
    if magic_match is None:
        raise ValueError("the uapi header defines no ioctl magic")
    magic = ord(magic_match.group(1))
    commands = {}
    for m in _IOCTL_RE.finditer(text):
        name, macro, nr, sname = m.group(1), m.group(2), int(m.group(3), 0), m.group(4)
        layout = layouts[sname]
        direction = _DIRS[macro]
        commands[name] = Command(name, ioc(direction, magic, nr, layout.size), direction, nr, layout)
    return magic, layouts, commands


MAGIC, LAYOUTS, COMMANDS = load()
BY_NUMBER = {c.number: c for c in COMMANDS.values()}

STEP_INFO = LAYOUTS["kv_cpu_step_info"]
BLOCK_INFO = LAYOUTS["kv_cpu_block_info"]
WEIGHTS_INFO = LAYOUTS["kv_cpu_weights_info"]
TELEMETRY_INFO = LAYOUTS["kv_cpu_telemetry_info"]

KV_CPU_STEP_ADVANCE = COMMANDS["KV_CPU_STEP_ADVANCE"].number
KV_CPU_MARK_HOT = COMMANDS["KV_CPU_MARK_HOT"].number
KV_CPU_EVICT = COMMANDS["KV_CPU_EVICT"].number
KV_CPU_PREFETCH = COMMANDS["KV_CPU_PREFETCH"].number
KV_CPU_SHARE_PREFIX = COMMANDS["KV_CPU_SHARE_PREFIX"].number
KV_CPU_SET_WEIGHTS = COMMANDS["KV_CPU_SET_WEIGHTS"].number
KV_CPU_GET_TELEMETRY = COMMANDS["KV_CPU_GET_TELEMETRY"].number

WEIGHT_FIELDS = WEIGHTS_INFO.fields
TELEMETRY_FIELDS = TELEMETRY_INFO.fields
