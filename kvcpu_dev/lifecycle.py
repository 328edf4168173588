"""A device's run files and the lock held for its life, safe against the
users of the machine.

Root creates and removes these files, so none of them may be a handle for
someone else: the run directory is owned by us and writable by nobody else
(refused otherwise, with one line), every path above it is either not
writable by others or sticky, and the files inside it are opened relative
to the directory's descriptor with O_NOFOLLOW, created with their modes set
explicitly (umask does not matter).  The lock is 0600: only root can open
it, so only root can hold it.  A pid is trusted only if that process has
this very lock file open; clean-up removes only what it can prove is ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib
import re
import select
import shlex
import signal
import stat
import time
from collections.abc import Iterator

from . import mounts, paths
from .paths import Options

log = logging.getLogger("kvcpu_dev")

STOP_TIMEOUT = 10.0
DIR_MODE = 0o755
LOCK_MODE = 0o600
PID_MODE = 0o644
LOG_MODE = 0o644


class StartError(Exception):
    """A reason not to start (or stop), said in one line."""


# -- directories --------------------------------------------------------------


def _owners() -> tuple[int, ...]:
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
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in _owners():
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
            if st.st_uid not in _owners():
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


def check_own_file(fd: int, path: pathlib.Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StartError(f"{path} is not a regular file; refusing to use it")
    if st.st_uid not in _owners():
        raise StartError(f"{path} is owned by uid {st.st_uid}, not root; refusing to use it")
    if st.st_nlink != 1:
        raise StartError(f"{path} has {st.st_nlink} hard links; refusing to use it")


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


# -- the lock ---------------------------------------------------------------


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


# -- stale clean-up ------------------------------------------------------------


def _is_our_link(opts: Options, path: pathlib.Path) -> bool:
    try:
        return pathlib.Path(os.readlink(path)) in opts.link_targets()
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stale_temp_links(opts: Options) -> list[pathlib.Path]:
    """DEV_DIR/.N.PID links to our node targets whose maker is dead: what a
    daemon killed between symlink and rename leaves."""
    found = []
    pattern = re.compile(re.escape(paths.temp_link_name(opts.name, 0)[:-1]) + r"(\d+)")
    with contextlib.suppress(OSError):
        for entry in os.scandir(opts.dev_dir):
            m = pattern.fullmatch(entry.name)
            if m and entry.is_symlink() and _is_our_link(opts, pathlib.Path(entry.path)) \
                    and not _pid_alive(int(m.group(1))):
                found.append(pathlib.Path(entry.path))
    return found


def remove_leftovers(opts: Options, run_dir: RunDir) -> list[str]:
    """Undo what a killed daemon left, and only what is provably its own:
    a kvcpu-N mount at RUN_DIR/N, a link to our node target, a temporary
    link of a dead maker, the pid file.  Call with the name's lock held."""
    removed = []
    if mounts.is_mounted(opts.attr_dir) and mounts.is_ours(opts.attr_dir, opts.name):
        mounts.detach(opts.attr_dir)
        removed.append(f"a stale mount at {opts.attr_dir}")
    if run_dir.unlink(opts.pid_name):
        removed.append("a stale pid file")
    node = opts.node
    if node.is_symlink() and _is_our_link(opts, node):
        node.unlink()
        removed.append(f"a stale link {node}")
    for link in stale_temp_links(opts):
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
            removed.append(f"a stale temporary link {link}")
    return removed


def prepare_attr_dir(opts: Options, run_dir: RunDir) -> None:
    """RUN_DIR/N: a directory of ours (made 0755) with nothing mounted on
    it, the mount point to be."""
    if mounts.is_mounted(opts.attr_dir):
        entry = mounts.entry_at(opts.attr_dir)
        raise StartError(f"{opts.attr_dir} has a mount that is not ours ({entry and entry[0]}); unmount it first")
    st = run_dir.lstat(opts.name)
    if st is None:
        os.mkdir(opts.name, DIR_MODE, dir_fd=run_dir.fd)
        st = run_dir.lstat(opts.name)
        if st is not None and stat.S_IMODE(st.st_mode) != DIR_MODE:
            os.chmod(opts.name, DIR_MODE, dir_fd=run_dir.fd, follow_symlinks=False)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StartError(f"{opts.attr_dir} exists and is not a directory; remove it first")
    if st.st_uid not in _owners():
        raise StartError(f"{opts.attr_dir} is owned by uid {st.st_uid}, not root; remove it first")


# -- stopping ----------------------------------------------------------------


def stop(opts: Options) -> str:
    """Stop the daemon for ``opts.name``; returns the line to print."""
    run_dir = RunDir.open(opts.run_dir, create=False)
    if run_dir is None:
        raise StartError(f"{opts.name} is not running (no {opts.run_dir})")
    with run_dir:
        with lock_if_free(opts, run_dir) as free:
            if free:  # nobody runs: tidy what a crash left, and say so
                removed = remove_leftovers(opts, run_dir)
                note = f" (removed {', '.join(removed)})" if removed else ""
                raise StartError(f"{opts.name} is not running{note}")
        found = open_daemon(opts, run_dir)
        if found is None:
            raise StartError(f"{opts.name} is starting or stopping (no process holds its lock yet); try again")
        pid, pidfd = found
        try:
            with contextlib.suppress(ProcessLookupError):  # it may be on its way out
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)  # a stopped daemon must hear it
            deadline = time.monotonic() + STOP_TIMEOUT
            while True:
                with lock_if_free(opts, run_dir) as free:
                    if free:  # and whatever a crash of its own start left (a temporary link)
                        for what in remove_leftovers(opts, run_dir):
                            log.info("%s: removed %s", opts.name, what)
                        break
                if time.monotonic() > deadline:
                    raise StartError(f"{opts.name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
                time.sleep(0.01)
            # The lock is free once the daemon let go of it; "stopped" means
            # the process is gone too (a pidfd reads ready when it exits).
            if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise StartError(f"{opts.name} (pid {pid}) did not exit within {STOP_TIMEOUT:.0f} s")
        finally:
            os.close(pidfd)
    return f"kvcpu-dev: {opts.name} stopped (pid {pid})"
