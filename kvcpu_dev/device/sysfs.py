"""sysfs-style attribute files: the type the transports expose, and the
kernel's number parsing for writes.

An attribute is what a driver declares with DEVICE_ATTR: a name, a mode, a
``show`` that renders the whole file, and an optional ``store`` that takes
the bytes of one write() and who wrote them (``Caller``: the FUSE
request's uid, gid and pid), and raises ``OSError(errno, ...)`` to refuse
it.  A view of megabytes may also offer its text in ``pieces``, so that a
reader's each read formats only what it returns and the daemon serves
other requests in between.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .regs import U32 as U32_MAX
from .regs import U64 as U64_MAX


class Caller(NamedTuple):
    """Who made a request: the FUSE request's uid, gid (the caller's
    filesystem ids) and pid (the calling thread, in the daemon's pid
    namespace; 0 when the kernel could not say)."""

    uid: int
    gid: int
    pid: int


#: A store called by the daemon itself (tests, the command line's options).
IN_PROCESS = Caller(0, 0, 0)

#: A store: the bytes of one write() and who wrote them.
Store = Callable[[bytes, Caller], None]


class Pieces(NamedTuple):
    """A view's text a piece at a time, from a snapshot taken when asked
    (so the pieces agree with each other): ``held`` bytes of that snapshot
    stay in memory until the last piece is made.  Bytes, as the reads
    answer them (megabytes decoded and encoded again cost as much as the
    C that writes them)."""

    held: int
    text: Iterator[bytes]


class Attribute(NamedTuple):
    name: str
    show: Callable[[], str]
    store: Store | None = None
    #: The same text as show's, in pieces (a large view): see Pieces.
    pieces: Callable[[], Pieces] | None = None
    #: A large view (megabytes to render): readable by the node's owner and
    #: group only, not by every local user.
    private: bool = False
    #: A bench control (record, faults, control): readable as a private
    #: view, writable by the node's owner, and by its group only when the
    #: daemon is started with --control-group.
    control: bool = False

    @property
    def mode(self) -> int:
        return 0o644 if self.store is not None else 0o444


def os_error(code: int) -> OSError:
    """The OSError a refused request raises (the transports answer its errno)."""
    return OSError(code, os.strerror(code))


def kstrtoull(buf: bytes, base: int = 0) -> int:
    """Parse like the kernel's kstrtoull(): optional '+', base prefix when
    ``base`` is 0 (0x.. hex, 0.. octal), digits, one optional trailing
    newline, nothing else.  EINVAL on junk, ERANGE past 2**64-1."""
    s = buf.split(b"\0", 1)[0]  # the store sees a C string
    if s[:1] == b"+":
        s = s[1:]
    if base == 0:
        if s[:1] == b"0":
            hexdigit = s[2:3]
            if s[1:2].lower() == b"x" and hexdigit and hexdigit in b"0123456789abcdefABCDEF":
                base = 16
            else:
                base = 8
        else:
            base = 10
    if base == 16 and s[:2].lower() == b"0x":
        s = s[2:]
    value = 0
    n = 0
    for ch in s:
        digit = _digit(ch)
        if digit >= base:
            break
        value = value * base + digit
        n += 1
    if value > U64_MAX:  # the kernel reports overflow before trailing junk
        raise os_error(errno.ERANGE)
    if n == 0:
        raise os_error(errno.EINVAL)
    rest = s[n:]
    if rest[:1] == b"\n":
        rest = rest[1:]
    if rest:
        raise os_error(errno.EINVAL)
    return value


def kstrtou32(buf: bytes, base: int = 0) -> int:
    value = kstrtoull(buf, base)
    if value > U32_MAX:
        raise os_error(errno.ERANGE)
    return value


def _digit(ch: int) -> int:
    if 0x30 <= ch <= 0x39:
        return ch - 0x30
    if 0x61 <= ch <= 0x66:
        return ch - 0x61 + 10
    if 0x41 <= ch <= 0x46:
        return ch - 0x41 + 10
    return 99
