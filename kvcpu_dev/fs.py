"""The FUSE side: a small filesystem holding the attribute files and, for
the FUSE transport, the ``device`` file that answers the ioctls.

Mounted with ``allow_other,default_permissions``, so the kernel checks
every open against the modes and owners reported here, exactly as it does
for /dev/kvcpu0 and /sys/class/kv_cpu/kvcpu0.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from typing import Any, Callable

import trio

from . import lowlevel, mounts
from .attrs import Attribute
from .core import Device
from .native._fuse import lib

log = logging.getLogger("kvcpu_dev")

ROOT_INO = 1
DEVICE_INO = 2
DEVICE_FILE = "device"
#: Names never change while mounted, so the kernel may cache them for long.
CACHE_SECONDS = 3600.0
#: sysfs reports every attribute as one page.
ATTR_SIZE = 4096


class NodeFS:
    """Answers one FUSE mount: ``/``, ``device`` (optional), attributes."""

    def __init__(
        self,
        device: Device,
        attributes: list[Attribute],
        *,
        device_file: bool,
        device_mode: int = 0o600,
        device_uid: int = 0,
        device_gid: int = 0,
    ):
        self.device = device
        self.ready = trio.Event()
        self.device_file = device_file
        #: The inode whose ioctls reach the device (0: none, CUSE has it).
        self.ioctl_ino = DEVICE_INO if device_file else 0
        self.device_mode = device_mode
        self.device_uid = device_uid
        self.device_gid = device_gid
        self.attrs: dict[int, Attribute] = {}
        self.names: dict[bytes, int] = {}
        if device_file:
            self.names[DEVICE_FILE.encode()] = DEVICE_INO
        for ino, attr in enumerate(attributes, start=DEVICE_INO + 1):
            self.attrs[ino] = attr
            self.names[attr.name.encode()] = ino
        self._fh = itertools.count(1)
        self._open: dict[int, bytes | None] = {}  # fh -> rendered attribute

    def started(self) -> None:
        self.ready.set()

    # -- metadata ------------------------------------------------------

    def _stat(self, ino: int) -> tuple[int, int, int, int, int]:
        """(mode, nlink, uid, gid, size) of an inode, or ENOENT."""
        if ino == ROOT_INO:
            return stat.S_IFDIR | 0o755, 2, 0, 0, 0
        if ino == DEVICE_INO and self.device_file:
            return stat.S_IFREG | self.device_mode, 1, self.device_uid, self.device_gid, 0
        attr = self.attrs.get(ino)
        if attr is None:
            raise OSError(errno.ENOENT, "no such inode")
        return stat.S_IFREG | attr.mode, 1, 0, 0, ATTR_SIZE

    def lookup(self, req: Any, parent: int, name: bytes) -> None:
        ino = self.names.get(name) if parent == ROOT_INO else None
        if ino is None:
            raise OSError(errno.ENOENT, "no such file")
        lib.kv_reply_entry(req, ino, *self._stat(ino), CACHE_SECONDS)

    def getattr(self, req: Any, ino: int) -> None:
        lib.kv_reply_attr(req, ino, *self._stat(ino), CACHE_SECONDS)

    def setattr(self, req: Any, ino: int, to_set: int) -> None:
        # Only the truncate of `echo v > file` (O_TRUNC) is accepted, and
        # ignored, as sysfs and a character device do; the write() that
        # follows gets the real answer.  Modes and owners are fixed.
        if to_set & ~lib.FUSE_SET_ATTR_SIZE or ino == ROOT_INO:
            raise OSError(errno.EPERM, "attributes are fixed")
        lib.kv_reply_attr(req, ino, *self._stat(ino), CACHE_SECONDS)

    def opendir(self, req: Any, ino: int, fi: Any) -> None:
        if ino != ROOT_INO:
            raise OSError(errno.ENOTDIR, "not a directory")
        lowlevel.reply_open(req, fi, 0, direct_io=False)

    def readdir(self, req: Any, ino: int, size: int, off: int) -> None:
        entries = [(b".", ROOT_INO), (b"..", ROOT_INO), *self.names.items()]
        buf = lowlevel.ffi.new("char[]", size)
        pos = 0
        for index in range(off, len(entries)):
            name, child = entries[index]
            mode = self._stat(child)[0]
            need = lib.kv_add_direntry(req, buf + pos, size - pos, name, child, mode, index + 1)
            if pos + need > size:
                break
            pos += need
        lib.fuse_reply_buf(req, buf, pos)

    # -- files ---------------------------------------------------------

    def open(self, req: Any, ino: int, fi: Any) -> None:
        if ino == ROOT_INO:
            raise OSError(errno.EISDIR, "is a directory")
        if ino == DEVICE_INO and self.device_file:
            lowlevel.reply_open(req, fi, 0)
            return
        attr = self.attrs.get(ino)
        if attr is None:
            raise OSError(errno.ENOENT, "no such file")
        accmode = fi.flags & os.O_ACCMODE
        if accmode != os.O_RDONLY and attr.store is None:
            raise OSError(errno.EACCES, "read-only attribute")
        fh = next(self._fh)
        self._open[fh] = None
        lowlevel.reply_open(req, fi, fh)

    def read(self, req: Any, ino: int, size: int, off: int, fh: int) -> None:
        if fh not in self._open:  # the device file: no read(), as the driver
            raise OSError(errno.EINVAL, "no read on the device")
        text = self._open[fh]
        if text is None or off == 0:  # sysfs renders once per open file
            text = self._open[fh] = self.attrs[ino].show().encode()
        lib.fuse_reply_buf(req, text[off : off + size], min(size, max(0, len(text) - off)))

    def write(self, req: Any, ino: int, data: bytes, off: int, fh: int) -> None:
        if fh not in self._open:
            raise OSError(errno.EINVAL, "no write on the device")
        store = self.attrs[ino].store
        if store is None:
            raise OSError(errno.EACCES, "read-only attribute")
        taken = min(len(data), ATTR_SIZE)  # kernfs hands a store one page
        store(data[:taken])  # OSError -> errno, as a sysfs store
        lib.fuse_reply_write(req, taken)

    def release(self, req: Any, ino: int, fh: int) -> None:
        self._open.pop(fh, None)
        lib.fuse_reply_err(req, 0)


def mount_options(name: str) -> str:
    return f"allow_other,default_permissions,fsname={mounts.source_of(name)},subtype=kvcpu"
