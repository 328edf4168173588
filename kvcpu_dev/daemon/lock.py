"""One daemon per name: an flock on RUN_DIR/N.lock (0600: only root can
open it, so only root can hold it), held for the daemon's life.  A pid is
trusted only if that process has this very lock file open."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import stat
from collections.abc import Iterator

from .. import paths
from ..errors import StartError
from .options import Options
from .rundir import RunDir

LOCK_MODE = 0o600


def stop_command(opts: Options) -> str:
    words = ["kvcpu-dev", "--stop", "--name", opts.name]
    if opts.run_dir != paths.DEFAULT_RUN_DIR:
        words += ["--run-dir", str(opts.run_dir)]
    return shlex.join(words)


def take_lock(opts: Options, run_dir: RunDir) -> int:
    """An flock on RUN_DIR/N.lock: one daemon per name, released by the
    kernel however the daemon dies.  0600: nobody else can open it, so
    nobody else can hold it."""
    fd = run_dir.open_file(opts.lock_name, os.O_RDWR, LOCK_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = find_daemon_pid(opts, run_dir)
        who = f" (pid {pid})" if pid else ""
        raise StartError(f"{opts.name} is already running{who}; stop it with: {stop_command(opts)}") from None
    return fd


@contextlib.contextmanager
def lock_if_free(opts: Options, run_dir: RunDir) -> Iterator[bool]:
    """Hold the name's lock if no daemon does; yields whether we got it.
    The lock, not the pid file, says whether a daemon runs."""
    try:
        fd = run_dir.open_file(opts.lock_name, os.O_RDWR, LOCK_MODE, create=False)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # drops the lock if we held it


def _lock_identity(opts: Options, run_dir: RunDir) -> tuple[int, int] | None:
    st = run_dir.lstat(opts.lock_name)
    return None if st is None or not stat.S_ISREG(st.st_mode) else (st.st_dev, st.st_ino)


def holds_lock_file(pid: int, identity: tuple[int, int]) -> bool:
    """Whether process ``pid`` has the lock file (device, inode) open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            if (st.st_dev, st.st_ino) == identity:
                return True
    return False


def lock_holders(identity: tuple[int, int]) -> list[int]:
    """Pids /proc/locks names as holding an flock on the lock file."""
    dev, ino = identity
    key = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    pids = []
    with contextlib.suppress(OSError), open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                with contextlib.suppress(ValueError):
                    pids.append(int(fields[4]))
    return pids


def open_daemon(opts: Options, run_dir: RunDir) -> tuple[int, int] | None:
    """(pid, pidfd) of the daemon for this name: the pid file's pid, or the
    lock's holder, trusted only if that process has our lock file open (a
    0600 root file in a root-only directory: only a daemon of ours can).
    The pidfd pins the process: a signal through it cannot reach a
    process that reused the pid."""
    identity = _lock_identity(opts, run_dir)
    if identity is None:
        return None
    candidates = [p for p in [run_dir.read_pid(opts.pid_name)] if p]
    candidates += [p for p in lock_holders(identity) if p not in candidates]
    for pid in candidates:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        if holds_lock_file(pid, identity):  # checked after the pidfd pins it
            return pid, pidfd
        os.close(pidfd)
    return None


def find_daemon_pid(opts: Options, run_dir: RunDir) -> int | None:
    found = open_daemon(opts, run_dir)
    if found is None:
        return None
    os.close(found[1])
    return found[0]
