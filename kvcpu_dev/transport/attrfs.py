"""The attribute mount: a small filesystem holding the driver's (and the
model's) attribute files, and, with the FUSE transport, the ``device``
entry on which the fast path mounts the device file itself.

Mounted with ``allow_other,default_permissions``, so the kernel checks
every open against the modes and owners reported here, exactly as it does
for /dev/kvcpu0 and /sys/class/kv_cpu/kvcpu0.

Reads are bounded for hostile readers: an open file renders its text once
(at offset 0, as sysfs does) into a snapshot that later reads continue
from, and all snapshots together stay under ``SNAPSHOT_BUDGET`` bytes; when
over, the oldest are dropped and re-rendered if their reader comes back.
A large view (``blocks``) snapshots its arrays at offset 0 and formats its
text as reads reach it, a piece at a time, so a full directory's
formatting (~20 ms for 100,000 blocks in C, 0.3 s in Python) never holds
up a model view or a control behind it for long.
Large views (``Attribute.private``) are readable only by the node's owner
and group, not by everyone.  The bench's controls (``Attribute.control``:
``record``, ``faults``, ``control``) are read like those and written by the
node's owner (root) only, unless the daemon gives them to the node's group
(``--control-group``); a store is told who writes (``Caller``), so a
control can act with the writer's rights rather than root's.
"""

from __future__ import annotations

import bisect
import collections
import errno
import itertools
import logging
import os
import stat
from collections.abc import Iterator

import trio

from .. import mounts
from ..device.sysfs import Attribute, Caller
from ..native._fuse import lib
from ..paths import DEVICE_FILE
from .libfuse import Attr, DirEntry

log = logging.getLogger("kvcpu_dev")

ROOT_INO = 1
DEVICE_INO = 2
#: Names never change while mounted, so the kernel may cache them for long.
CACHE_SECONDS = 3600.0
#: sysfs reports every attribute as one page.
ATTR_SIZE = 4096
#: Rendered text held for open files, all together.
SNAPSHOT_BUDGET = 32 << 20
#: The most one read answers: a large view's text is made as its reads
#: reach it, on the thread that also serves every other attribute and
#: drains the ring.  A 1 MiB slice of `blocks` takes ~2 ms to make (written
#: in C, model/rows.py; ~30 ms in Python).  Fewer requests are faster: a
#: 5 MB `blocks` in 64 KiB slices took 81 requests and up to 330 ms under
#: a mixed flood, each waiting a turn of the ring's drain (since then, a
#: reader's requests that follow at once are served back to back:
#: libfuse.Session.serve).  Files are direct_io, so a shorter answer is a
#: short read, not an end of file.
READ_SLICE = 1 << 20


class Rendering:
    """One open file's text: whole at once, or made piece by piece as
    reads reach it (``Attribute.pieces``: a large view's formatting is
    spread over its reads, so other requests are served in between).

    The pieces made are kept as they came, and a read joins the few it
    spans: a text grown in place copied a 7 MB `blocks` twice more, as much
    time as the C took to write it."""

    def __init__(self, attr: Attribute):
        #: The pieces not yet made (None: the text is whole).
        self._rest: Iterator[bytes] | None
        if attr.pieces is None:
            self._rest, self._held = None, 0
            self._made = [attr.show().encode()]
        else:
            pieces = attr.pieces()
            self._rest, self._held = pieces.text, pieces.held
            self._made = []
        #: Where each piece made ends in the text.
        self._ends = list(itertools.accumulate(map(len, self._made)))
        self._failed = False

    @property
    def length(self) -> int:
        """Bytes of text made so far."""
        return self._ends[-1] if self._ends else 0

    @property
    def size(self) -> int:
        """Bytes it holds: the text so far and what the pieces still keep."""
        return self.length + self._held

    def read(self, off: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``off``, making the pieces they need.
        Pieces that failed fail every later read too (EIO), rather than
        end the text where they stopped."""
        if self._failed:
            raise OSError(errno.EIO, "the view failed to render")
        end = off + size
        if self.length < end and self._rest is not None:
            try:
                for piece in self._rest:
                    if piece:
                        self._made.append(piece)
                        self._ends.append(self.length + len(piece))
                    if self.length >= end:
                        break
                else:  # the last piece is made: the snapshot behind them is released
                    self._rest, self._held = None, 0
            except Exception:
                self._failed = True
                raise
        first = bisect.bisect_right(self._ends, off)
        last = bisect.bisect_left(self._ends, end, first)
        pos, parts = self._ends[first - 1] if first else 0, []
        for piece in self._made[first : last + 1]:
            parts.append(memoryview(piece)[max(0, off - pos) : end - pos])
            pos += len(piece)
        return b"".join(parts)

    def more_after(self, end: int) -> bool:
        """Whether there is text past ``end`` (or pieces still to make)."""
        return self.length > end or self._rest is not None


class Snapshots:
    """Rendered attribute text per open file, under one byte budget."""

    def __init__(self, budget: int = SNAPSHOT_BUDGET):
        self.budget = budget
        self.total = 0
        self._open: collections.OrderedDict[int, Rendering] = collections.OrderedDict()

    def get(self, fh: int) -> Rendering | None:
        return self._open.get(fh)

    def put(self, fh: int, rendering: Rendering) -> None:
        self.drop(fh)
        self._open[fh] = rendering
        self.total += rendering.size
        self._trim(fh)

    def read(self, fh: int, size: int, off: int) -> bytes:
        """At most ``size`` bytes (and READ_SLICE) at ``off`` of fh's
        rendering, making what they need."""
        rendering = self._open[fh]
        before = rendering.size
        try:
            return rendering.read(off, min(size, READ_SLICE))
        finally:  # a rendering that failed holds what it made, until dropped
            self.total += rendering.size - before
            self._trim(fh)

    def _trim(self, keep: int) -> None:
        """Drop the oldest renderings but ``keep``'s while over budget."""
        while self.total > self.budget and len(self._open) > 1:
            fh = next(iter(self._open))
            if fh == keep:
                self._open.move_to_end(fh)
                continue
            self.total -= self._open.pop(fh).size

    def drop(self, fh: int) -> None:
        old = self._open.pop(fh, None)
        if old is not None:
            self.total -= old.size


class NodeFS:
    """Answers the attribute mount: ``/``, ``device`` (FUSE transport), and
    the attribute files (see lowlevel.Operations for the contract)."""

    cache_seconds = CACHE_SECONDS

    def __init__(
        self,
        attributes: list[Attribute],
        *,
        device_file: bool,
        device_mode: int = 0o600,
        device_uid: int = 0,
        device_gid: int = 0,
        control_group: bool = False,
        snapshot_budget: int = SNAPSHOT_BUDGET,
    ):
        self.ready = trio.Event()
        self.device_file = device_file
        self.device_mode = device_mode
        self.device_uid = device_uid
        self.device_gid = device_gid
        self.control_group = control_group
        self.attrs: dict[int, Attribute] = {}
        self.names: dict[bytes, int] = {}
        if device_file:
            self.names[DEVICE_FILE.encode()] = DEVICE_INO
        for ino, attr in enumerate(attributes, start=DEVICE_INO + 1):
            self.attrs[ino] = attr
            self.names[attr.name.encode()] = ino
        self._fh = itertools.count(1)
        self._open: set[int] = set()
        self.snapshots = Snapshots(snapshot_budget)
        #: The last request answered is one whose next follows at once: a
        #: large view's lookup, open, or read that left its reader mid-file
        #: (small files' readers are left as they were: NodeFS.continues).
        self._continued = False

    def started(self) -> None:
        self.ready.set()

    def continues(self) -> bool:
        """Only a large view's: a small file's reader gains nothing from a
        hold, and any local user may open one."""
        continued, self._continued = self._continued, False
        return continued

    def _large(self, ino: int) -> bool:
        attr = self.attrs.get(ino)
        return attr is not None and attr.pieces is not None

    # -- metadata ------------------------------------------------------

    def _attr(self, ino: int) -> Attr:
        if ino == ROOT_INO:
            return Attr(ino, stat.S_IFDIR | 0o755, 2, 0, 0, 0)
        if ino == DEVICE_INO and self.device_file:
            return Attr(ino, stat.S_IFREG | self.device_mode, 1, self.device_uid, self.device_gid, 0)
        attr = self.attrs.get(ino)
        if attr is None:
            raise OSError(errno.ENOENT, "no such inode")
        if attr.control:  # the owner's; the group reads as --mode lets it, writes with --control-group
            mode = 0o660 if self.control_group else 0o600 | self.device_mode & 0o040
            return Attr(ino, stat.S_IFREG | mode, 1, self.device_uid, self.device_gid, ATTR_SIZE)
        if attr.private:  # the owner's bits, and the group's if --mode gives them
            mode = attr.mode & 0o600
            mode |= self.device_mode & (mode >> 3)
            return Attr(ino, stat.S_IFREG | mode, 1, self.device_uid, self.device_gid, ATTR_SIZE)
        return Attr(ino, stat.S_IFREG | attr.mode, 1, 0, 0, ATTR_SIZE)

    def lookup(self, parent: int, name: bytes) -> Attr:
        ino = self.names.get(name) if parent == ROOT_INO else None
        if ino is None:
            raise OSError(errno.ENOENT, "no such file")
        self._continued = self._large(ino)  # an open follows, as a rule
        return self._attr(ino)

    def getattr(self, ino: int) -> Attr:
        return self._attr(ino)

    def setattr(self, ino: int, to_set: int) -> Attr:
        # Only the truncate of `echo v > file` (O_TRUNC) is accepted, and
        # ignored, as sysfs does; the write() that follows gets the real
        # answer.  Modes and owners are fixed.
        if to_set & ~lib.FUSE_SET_ATTR_SIZE or ino == ROOT_INO:
            raise OSError(errno.EPERM, "attributes are fixed")
        return self._attr(ino)

    def opendir(self, ino: int) -> int:
        if ino != ROOT_INO:
            raise OSError(errno.ENOTDIR, "not a directory")
        return 0

    def readdir(self, ino: int, off: int) -> list[DirEntry]:
        entries = [(b".", ROOT_INO), (b"..", ROOT_INO), *self.names.items()]
        return [DirEntry(name, child, self._attr(child).mode) for name, child in entries]

    # -- files ---------------------------------------------------------

    def open(self, ino: int, flags: int) -> int:
        if ino == ROOT_INO:
            raise OSError(errno.EISDIR, "is a directory")
        if ino == DEVICE_INO and self.device_file:
            # Only reached before the fast path mounts over this entry.
            raise OSError(errno.ENODEV, "the device is not up yet")
        attr = self.attrs.get(ino)
        if attr is None:
            raise OSError(errno.ENOENT, "no such file")
        if flags & os.O_ACCMODE != os.O_RDONLY and attr.store is None:
            raise OSError(errno.EACCES, "read-only attribute")
        fh = next(self._fh)
        self._open.add(fh)
        self._continued = self._large(ino)  # its first read follows at once
        return fh

    def read(self, ino: int, size: int, off: int, fh: int) -> bytes:
        if fh not in self._open:
            raise OSError(errno.EINVAL, "not an attribute")
        if self.snapshots.get(fh) is None or off == 0:  # sysfs renders once per open file
            self.snapshots.put(fh, Rendering(self.attrs[ino]))
        data = self.snapshots.read(fh, size, off)
        rendering = self.snapshots.get(fh)
        end = off + len(data)  # a request filled, text (or pieces) behind it
        self._continued = len(data) == min(size, READ_SLICE) and rendering is not None and rendering.more_after(end)
        return data

    def write(self, ino: int, data: bytes, off: int, fh: int, caller: Caller) -> int:
        if fh not in self._open:
            raise OSError(errno.EINVAL, "not an attribute")
        attr = self.attrs[ino]
        if attr.store is None:
            raise OSError(errno.EACCES, "read-only attribute")
        if attr.control and not self.control_group and caller.uid != self.device_uid:
            raise OSError(errno.EACCES, "a control is the owner's")  # the kernel refused the open already
        taken = min(len(data), ATTR_SIZE)  # kernfs hands a store one page
        attr.store(data[:taken], caller)  # OSError -> errno, as a sysfs store
        return taken

    def release(self, ino: int, fh: int) -> None:
        self._open.discard(fh)
        self.snapshots.drop(fh)


def mount_options(name: str) -> str:
    return f"allow_other,default_permissions,fsname={mounts.source_of(name)},subtype=kvcpu"


def device_mount_options(name: str) -> str:
    """The device file's own mount: another file system type, so clients
    looking for the attribute mount (fuse.kvcpu) never find this one."""
    return f"allow_other,default_permissions,fsname={mounts.source_of(name)},subtype=kvcpu-device"
