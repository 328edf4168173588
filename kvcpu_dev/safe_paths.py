"""Opening directories and files that root is told about by others, safe
against the users of the machine.

Root creates files in the run directory, the log directory and wherever a
recording goes, so none of these may be a handle for someone else: every
directory on the way is owned by root (or us) and either not writable by
others or sticky, a symlink on the way is root's, and the last directory
is writable by nobody else.  Files inside are opened relative to the
directory's descriptor, never through a symlink, only when they are
regular files of ours with one link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import stat
from typing import NamedTuple

from .errors import StartError

DIR_MODE = 0o755


def owners() -> tuple[int, ...]:
    return (0, os.geteuid())


def _check_symlinks(path: pathlib.Path) -> None:
    """A symlink on the way to ``path`` must be root's: one made by a user
    in a directory they can write could send root's files anywhere."""
    current = pathlib.Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StartError(f"cannot examine {current}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in owners():
            raise StartError(f"{current} is a symlink owned by uid {st.st_uid}; refusing to follow it")


def secure_dir(path: pathlib.Path, create: bool, what: str = "directory") -> int | None:
    """A descriptor of directory ``path``, opened without following a symlink
    at any step after the (root-owned) ones the path itself names; created
    0755 where missing if ``create`` (None if missing and not).

    Refused with one line: a directory on the way that others may write
    (unless sticky, like /tmp) or that is owned by someone other than root
    or us; and ``path`` itself if group- or world-writable."""
    path = pathlib.Path(os.path.abspath(path))
    _check_symlinks(path)
    real = pathlib.Path(os.path.realpath(path))
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = pathlib.Path("/")
    try:
        parts = real.parts[1:]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            here = here / part
            made = False
            try:
                nfd = _open_dir(fd, part, here, f"{what} ")
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    made = True
                nfd = _open_dir(fd, part, here, f"{what} ")
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            if made:  # whatever the umask said
                os.fchmod(fd, DIR_MODE)
                st = os.fstat(fd)
            if st.st_uid not in owners():
                raise StartError(f"{what} {here} is owned by uid {st.st_uid}, not root; refusing to use it")
            writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if last and writable:
                raise StartError(f"{what} {here} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); "
                                 "refusing to use it")
            if not last and writable and not st.st_mode & stat.S_ISVTX:
                raise StartError(f"{here} (above the {what} {path}) is writable by others; refusing to use it")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_dir(fd: int, part: str, here: pathlib.Path, what: str) -> int:
    """Directory ``part`` of directory ``fd``, without following a symlink;
    StartError (one line) for a symlink, a file or another failure there;
    FileNotFoundError passed on."""
    try:
        return os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StartError(f"{here} is not a directory (a symlink or a file); refusing") from None
        raise StartError(f"cannot open {what}{here}: {exc.strerror}") from None


def check_own_file(fd: int, path: pathlib.Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StartError(f"{path} is not a regular file; refusing to use it")
    if st.st_uid not in owners():
        raise StartError(f"{path} is owned by uid {st.st_uid}, not root; refusing to use it")
    if st.st_nlink != 1:
        raise StartError(f"{path} has {st.st_nlink} hard links; refusing to use it")


# -- acting for a caller who is not root ----------------------------------------------
#
# A bench control written by a member of the node's group (--control-group)
# makes root open a path: root may do so only where that member could, by
# the member's own uid and groups, so a control is never a way around the
# file system's permissions.


class Who(NamedTuple):
    """A caller's identity as the kernel checks permissions: filesystem
    uid and gid, and supplementary groups."""

    uid: int
    gid: int
    groups: frozenset[int]


def who_called(uid: int, gid: int, pid: int) -> Who:
    """The caller of a FUSE request, with its groups read from
    /proc/PID/status; StartError (one line) when that thread cannot be
    shown to be the caller still (gone, another namespace, other ids)."""
    if pid <= 0:
        raise StartError("cannot tell the caller's groups (the kernel gave no pid); refusing")
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        uids, gids = fields["Uid"].split(), fields["Gid"].split()
        groups = frozenset(int(g) for g in fields.get("Groups", "").split())
        same = int(uids[3]) == uid and int(gids[3]) == gid  # the filesystem ids, as FUSE reports them
    except (OSError, KeyError, IndexError, ValueError):
        raise StartError(f"cannot tell the groups of the caller (pid {pid}); refusing") from None
    if not same:
        raise StartError(f"pid {pid} no longer has the caller's uid {uid} and gid {gid}; refusing")
    return Who(uid, gid, groups)


R_OK, W_OK, X_OK = 4, 2, 1


def may(st: os.stat_result, who: Who, want: int) -> bool:
    """Whether ``who`` has the ``want`` bits (R_OK | W_OK | X_OK) on a file
    by its mode bits alone, as generic_permission() picks the class."""
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif st.st_gid == who.gid or st.st_gid in who.groups:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def _mode_bits_only(fd: int, here: pathlib.Path) -> None:
    """An access ACL can refuse what the mode bits allow: refuse rather
    than guess."""
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise StartError(f"cannot examine {here}: {exc.strerror}") from None
    if "system.posix_acl_access" in names:
        raise StartError(f"{here} has an access ACL; a control acting for another user follows mode "
                         "bits only, so it refuses")


def caller_dir(path: pathlib.Path, who: Who) -> int:
    """A descriptor of directory ``path`` if ``who`` could create a file in
    it: every directory from / searchable by ``who``, the last one also
    writable, by mode bits, no ACL on the way; no symlink, ``.`` or ``..``
    (give the real path: kvctl resolves it as its caller).  Each directory
    is looked into only once ``who`` may search it, so a refusal names
    nothing ``who`` could not see.  StartError (one line) otherwise."""
    if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
        raise StartError(f"{path}: give an absolute path without . or ..")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = pathlib.Path("/")
    try:
        for part in path.parts[1:]:
            _mode_bits_only(fd, here)
            if not may(os.fstat(fd), who, X_OK):
                raise StartError(f"{here} is not searchable by uid {who.uid}; refusing")
            here = here / part
            try:
                nfd = _open_dir(fd, part, here, "")
            except FileNotFoundError:
                raise StartError(f"{here} does not exist") from None
            os.close(fd)
            fd = nfd
        _mode_bits_only(fd, here)
        if not may(os.fstat(fd), who, W_OK | X_OK):
            raise StartError(f"uid {who.uid} may not create files in {here}; refusing")
        return fd
    except BaseException:
        os.close(fd)
        raise
