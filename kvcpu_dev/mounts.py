"""Reading /proc/self/mountinfo and detaching mounts: how a new daemon
cleans up after one that was killed (a FUSE mount whose server died stays
mounted and answers ENOTCONN until someone detaches it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import re

MNT_DETACH = 2

#: How a device's attribute mount shows in the mount table, which is how
#: clients find it whatever --run-dir was (see client.attr_dir).
KVCPU_FS_TYPE = "fuse.kvcpu"


def source_of(name: str) -> str:
    return f"kvcpu-{name}"
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, source) of every mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            tail = fields[fields.index("-") + 1 :]  # after the optional fields
            out.append((_unescape(fields[4]), tail[0], _unescape(tail[1])))
    return out


def mount_points() -> set[str]:
    return {point for point, _, _ in _mounts()}


def find(fstype: str, source: str) -> str | None:
    """The mount point of the mount of ``fstype`` from ``source``, if any."""
    for point, kind, src in _mounts():
        if kind == fstype and src == source:
            return point
    return None


def _canonical(path: pathlib.Path) -> str:
    """The path as mountinfo spells it.  Only the parent is resolved: the
    mount point itself may be a dead FUSE mount that fails every stat."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def is_mounted(path: pathlib.Path) -> bool:
    return _canonical(path) in mount_points()


def detach(path: pathlib.Path) -> None:
    if _libc.umount2(os.fsencode(_canonical(path)), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path}: {os.strerror(err)}")


def detach_if_mounted(path: pathlib.Path) -> bool:
    if is_mounted(path):
        detach(path)
        return True
    return False
