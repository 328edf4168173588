"""The device's ABI, read from the C header ``uapi/linux/kv_cpu.h``.

The header is the single source of truth: the struct layouts come from its
struct definitions and the ioctl numbers from evaluating its ``_IOW``/``_IOR``
lines with the Linux generic encoding.  It is kept plain (one fixed-width
``__uNN`` member per declaration), so a few regular expressions read it
exactly, in well under a millisecond; anything else in a struct is an error,
not a guess.  (cffi's C parser, which read it before, cost every ``kvctl``
command ~25 ms.)  A test compiles a C program against the same header and
compares.
"""

from __future__ import annotations

import pathlib
import re
import struct
from typing import NamedTuple

# kvcpu_dev/uapi links to the repository's uapi/ (and is copied on install).
HEADER = pathlib.Path(__file__).parent.parent / "uapi" / "linux" / "kv_cpu.h"

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
    """One struct: its fields in order, their offsets, its size, and a
    ``struct.Struct`` that packs it (built from the same offsets)."""

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


_STRUCT_RE = re.compile(r"struct\s+(kv_cpu_\w+)\s*\{([^}]*)\};")
_MEMBER_RE = re.compile(r"\s*(__u(?:8|16|32|64))\s+([A-Za-z_]\w*)\s*")
_MAGIC_RE = re.compile(r"#define\s+KV_CPU_MAGIC\s+'(.)'")
_IOCTL_RE = re.compile(
    r"#define\s+(KV_CPU_\w+)\s+(_IO[RW]*)\(\s*KV_CPU_MAGIC\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*,"
    r"\s*struct\s+(kv_cpu_\w+)\s*\)"
)
#: The header's member types as ``struct`` format codes.
_FORMATS = {"__u64": "Q", "__u32": "I", "__u16": "H", "__u8": "B"}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _members(name: str, body: str) -> list[tuple[str, str]]:
    """(field, format code) of each member.  Only one fixed-width scalar per
    declaration is understood; anything else is refused, not guessed at."""
    *declarations, tail = body.split(";")
    if tail.strip() or not declarations:
        raise ValueError(f"struct {name}: cannot read {body.strip()!r}")
    members = []
    for declaration in declarations:
        match = _MEMBER_RE.fullmatch(declaration)
        if match is None:
            raise ValueError(f"struct {name}: cannot read member {declaration.strip()!r}"
                             " (only __u8, __u16, __u32 and __u64 scalars)")
        members.append((match.group(2), _FORMATS[match.group(1)]))
    return members


def _alignment(code: str) -> int:
    return struct.calcsize(f"@B0{code}")


def _layout(name: str, members: list[tuple[str, str]]) -> Layout:
    """The platform C compiler's layout (``struct``'s native mode aligns as C
    does, and a ``0`` count pads to a type's alignment), packed little-endian
    with the padding as explicit pad bytes."""
    codes = "".join(code for _, code in members)
    offsets = tuple(struct.calcsize(f"@{codes[:i]}0{code}") for i, code in enumerate(codes))
    size = struct.calcsize(f"@{codes}0{max(codes, key=_alignment)}")  # with tail padding
    fmt, pos = "<", 0
    for offset, code in zip(offsets, codes):
        if offset > pos:
            fmt += f"{offset - pos}x"
        fmt += code
        pos = offset + struct.calcsize(code)
    if size > pos:
        fmt += f"{size - pos}x"
    return Layout(name, tuple(field for field, _ in members), offsets, size, struct.Struct(fmt))


def load(header: pathlib.Path = HEADER) -> tuple[int, dict[str, Layout], dict[str, Command]]:
    """Parse the header: (magic, layouts by struct name, commands by name)."""
    text = _strip_comments(header.read_text())
    layouts = {m.group(1): _layout(m.group(1), _members(m.group(1), m.group(2)))
               for m in _STRUCT_RE.finditer(text)}
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
