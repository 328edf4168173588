"""Reading /proc/self/mountinfo and detaching mounts: how a new daemon
cleans up after one that was killed (a FUSE mount whose server died stays
mounted and answers ENOTCONN until someone detaches it)."""

from __future__ import annotations

import ctypes
import os
import pathlib
import re

from . import paths

MNT_DETACH = 2

#: How a device's attribute mount shows in the mount table, which is how
#: clients find it whatever --run-dir was (see client.attr_dir).
KVCPU_FS_TYPE = paths.FS_TYPE
source_of = paths.mount_source

#: libc as this process already has it: ctypes.util.find_library runs
#: ldconfig in a subprocess, which was a third of every kvctl run.
_libc = ctypes.CDLL(None, use_errno=True)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _table() -> list[tuple[str, str, str, str]]:
    """(mount point, file system type, source, major:minor) of every mount,
    in mount order (a later one covers an earlier one at the same point)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            tail = fields[fields.index("-") + 1 :]  # after the optional fields
            out.append((_unescape(fields[4]), tail[0], _unescape(tail[1]), fields[2]))
    return out


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, source) of every mount."""
    return [entry[:3] for entry in _table()]


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
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def is_mounted(path: pathlib.Path) -> bool:
    return _canonical(path) in mount_points()


def entry_at(path: pathlib.Path, inside: str | None = None) -> tuple[str, str, str] | None:
    """(file system type, source, major:minor) of the top mount at ``path``,
    or at its entry ``inside`` (a mount on a file in a mount: the device
    file on the attribute mount), found without a look inside ``path``:
    that would ask the file system mounted there, which may be the very
    daemon that is waiting for us."""
    point = _canonical(path) if inside is None else os.path.join(_canonical(path), inside)
    found = None
    for where, kind, source, devno in _table():
        if where == point:
            found = (kind, source, devno)
    return found


def is_ours(path: pathlib.Path, name: str) -> bool:
    """Whether the top mount at ``path`` is device ``name``'s attribute mount
    (a kvcpu file system from kvcpu-NAME): the only mount we ever detach."""
    entry = entry_at(path)
    return entry is not None and entry[:2] == (paths.FS_TYPE, paths.mount_source(name))


def is_our_device_mount(attr_dir: pathlib.Path, name: str) -> bool:
    """Whether the top mount on the device file in ``attr_dir`` is device
    ``name``'s device file."""
    entry = entry_at(attr_dir, paths.DEVICE_FILE)
    return entry is not None and entry[:2] == (paths.DEVICE_FS_TYPE, paths.mount_source(name))


def fuse_connection(path: pathlib.Path, inside: str | None = None) -> str | None:
    """The FUSE connection's directory name under /sys/fs/fuse/connections
    for the mount at ``path`` (or its entry ``inside``: entry_at): the
    kernel's dev_t of the mount, in decimal."""
    entry = entry_at(path, inside)
    if entry is None or not entry[0].startswith("fuse"):
        return None
    major, minor = map(int, entry[2].split(":"))
    return str(major << 20 | minor)


def mount_fusectl() -> bool:
    """Mount the FUSE control file system where systemd would; False if it
    cannot be (no fusectl in this kernel, no privilege)."""
    where = paths.FUSECTL_DIR
    if is_mounted(where):
        return True
    if _libc.mount(b"fusectl", os.fsencode(where), b"fusectl", 0, None) != 0:
        return False
    return True


def detach(path: pathlib.Path) -> None:
    if _libc.umount2(os.fsencode(_canonical(path)), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path}: {os.strerror(err)}")


def detach_if_mounted(path: pathlib.Path) -> bool:
    if is_mounted(path):
        detach(path)
        return True
    return False
