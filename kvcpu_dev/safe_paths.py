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
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    made = True
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise StartError(f"{here} is not a directory (a symlink or a file); refusing") from None
                raise StartError(f"cannot open {what} {here}: {exc.strerror}") from None
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


def check_own_file(fd: int, path: pathlib.Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StartError(f"{path} is not a regular file; refusing to use it")
    if st.st_uid not in owners():
        raise StartError(f"{path} is owned by uid {st.st_uid}, not root; refusing to use it")
    if st.st_nlink != 1:
        raise StartError(f"{path} has {st.st_nlink} hard links; refusing to use it")
