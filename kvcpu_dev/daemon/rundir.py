"""A device's run directory (RUN_DIR: the pid, lock and log files, the
mount point) and the node's directory, opened with safe_paths' rules."""

from __future__ import annotations

import errno
import os
import pathlib
import re
import stat

from ..errors import StartError
from ..safe_paths import check_own_file, secure_dir
from .options import Options

PID_MODE = 0o644
LOG_MODE = 0o644


class RunDir:
    """RUN_DIR, open; its files by name, relative to its descriptor."""

    def __init__(self, path: pathlib.Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, path: pathlib.Path, create: bool = True) -> RunDir | None:
        fd = secure_dir(path, create, "run directory")
        return None if fd is None else cls(path, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ---------------------------------------------------------------

    def open_file(self, name: str, flags: int, mode: int, create: bool = True) -> int:
        """``name`` in this directory: never through a symlink, only a regular
        file of ours with one link, and (when we may) with exactly ``mode``."""
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block us
        if create:
            flags |= os.O_CREAT
        try:
            fd = os.open(name, flags, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StartError(f"{self.path / name} is a symlink; refusing to follow it") from None
            if exc.errno == errno.ENOENT:
                raise
            raise StartError(f"cannot open {self.path / name}: {exc.strerror}") from None
        try:
            check_own_file(fd, self.path / name)
            if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                os.fchmod(fd, mode)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def unlink(self, name: str) -> bool:
        """Remove the entry ``name`` (a symlink is removed, never followed)."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def write_pid(self, name: str, pid: int) -> None:
        """Atomically: a new 0644 file renamed over ``name``."""
        tmp = f".{name}.{os.getpid()}"
        self.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PID_MODE,
                     dir_fd=self.fd)
        try:
            os.fchmod(fd, PID_MODE)
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def read_pid(self, name: str) -> int | None:
        """The pid in ``name`` if it is a regular file of ours holding one."""
        try:
            fd = self.open_file(name, os.O_RDONLY, PID_MODE, create=False)
        except (OSError, StartError):
            return None
        try:
            text = os.read(fd, 64).decode("ascii", "replace")
        finally:
            os.close(fd)
        m = re.fullmatch(r"\s*(\d{1,10})\s*", text)
        return int(m.group(1)) if m and 0 < int(m.group(1)) < 2**31 else None

    def remove_pid(self, name: str, pid: int | None = None) -> bool:
        """Remove the pid file (only if it names ``pid``, when given)."""
        if pid is not None and self.read_pid(name) != pid:
            return False
        return self.unlink(name)


def open_log(opts: Options, run_dir: RunDir) -> int:
    """The background daemon's log, appended to: RUN_DIR/N.log, or
    --log-file (its directory checked as the run directory is)."""
    path = opts.log_file
    flags = os.O_WRONLY | os.O_APPEND
    if path.parent == opts.run_dir:
        return run_dir.open_file(path.name, flags, LOG_MODE)
    fd = secure_dir(path.parent, create=False, what="log directory")
    if fd is None:
        raise StartError(f"cannot open the log {path}: its directory does not exist")
    try:
        return RunDir(path.parent, fd).open_file(path.name, flags, LOG_MODE)
    finally:
        os.close(fd)


def check_dev_dir(opts: Options) -> None:
    """The node's directory: it must exist and be root's alone (the node
    and its link are made there by path)."""
    fd = secure_dir(opts.dev_dir, create=False, what="device directory")
    if fd is None:
        raise StartError(f"device directory {opts.dev_dir} does not exist")
    os.close(fd)
