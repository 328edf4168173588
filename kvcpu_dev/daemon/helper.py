"""The privileged helper: a small process that keeps root for a daemon
that gave it up, and watches over its clients.

It is forked before the daemon mounts anything (so it holds none of the
device's FUSE or CUSE descriptors) and talks to it over a socket pair.
It holds the name's lock too, so the lock is free, and ``--stop`` returns,
only once everything is cleaned up.  It does three things:

- **Teardown** (asked by the daemon as it stops, and again when the daemon
  is gone however it ended, kill -9 included): remove the node's link and
  the temporary one if they point at our node, a CDI spec naming our node,
  a CUSE node we made by hand,
  abort the attribute mount's FUSE connection and detach the mount (a mount
  of type fuse.kvcpu from kvcpu-N only), then the pid file and the empty
  mount point.  All of these need root; none is done by path outside the
  checked run and device directories.
- **Request timeout** (``--request-timeout S``): every S/10 s it reads the
  number of requests waiting on the daemon's FUSE connection
  (/sys/fs/fuse/connections/ID/waiting), the daemon's system-call count
  (/proc/PID/io), and the page the daemon shares with it (SharedPage: the
  requests its fast path served, the replies it holds back for an injected
  latency and when they are due).  When more requests than it holds have
  waited S seconds while the daemon made no progress (stopped, or stuck),
  it aborts the connection through
  /sys/fs/fuse/connections/ID/abort: a waiting client's call fails with
  ECONNABORTED, later ones with ENOTCONN, instead of hanging.  A CUSE
  connection has no entry there, so with CUSE a daemon found stopped
  (state T) for S seconds is killed instead; its clients then get ENODEV.
  Over FUSE io_uring a stopped daemon is killed after the abort too: a
  request its stopped queue thread was handed is ended only when the
  rings close.
- Nothing else: it ignores SIGTERM, SIGINT and SIGHUP (the daemon's end is
  what ends it) and runs no code of the device.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import pathlib
import select
import signal
import socket
import stat
import struct
import sys
import time
from typing import Any

from .. import mounts
from ..paths import DEVICE_FILE, FUSECTL_DIR
from . import cdi
from .options import Options

log = logging.getLogger("kvcpu_dev")

TEARDOWN_TIMEOUT = 10.0


class SharedPage:
    """A page the daemon and its helper share (MAP_SHARED, made before the
    fork): the fast path writes struct kv_shared into it, the helper reads
    it without asking the daemon anything."""

    #: struct kv_shared (native/kvcpu.h): served, delayed, delayed_due_ns.
    LAYOUT = struct.Struct("=3Q")

    def __init__(self) -> None:
        self.page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous, MAP_SHARED

    def read(self) -> tuple[int, int, int]:
        """(requests served, replies held for a latency, when the last is due)."""
        served, held, due = self.LAYOUT.unpack_from(self.page)
        return served, held, due


class Helper:
    """The daemon's end of the helper."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid, self.sock = pid, sock

    @classmethod
    def start(cls, opts: Options, transport: str, keep: tuple[int, ...], shared: SharedPage) -> Helper:
        """Fork the helper; it keeps ``keep`` (the lock, the run directory)
        and stdio (the log), and closes every other descriptor."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        daemon = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                code = _Watch(opts, transport, theirs, daemon, keep, shared).run()
            except BaseException:  # noqa: BLE001 - never return into the daemon's code
                log.exception("%s: the privileged helper failed", opts.name)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(message).encode())

    def ready(self, **info: Any) -> None:
        """The node is published: what the helper must know to watch and
        clean up (the daemon's pid, a node made by hand)."""
        self._send({"op": "ready", **info})

    def teardown(self) -> None:
        """Have the helper undo the root-only steps now; wait until done."""
        self._send({"op": "teardown"})
        deadline = time.monotonic() + TEARDOWN_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                ready, _, _ = select.select([self.sock], [], [], left)
            except InterruptedError:
                continue
            if not ready:
                break
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data or json.loads(data).get("op") == "done":
                return
        log.warning("the privileged helper did not answer within %.0f s", TEARDOWN_TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def _set_name(name: bytes) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME


class _Watch:
    """The helper process."""

    def __init__(self, opts: Options, transport: str, sock: socket.socket, daemon: int,
                 keep: tuple[int, ...], shared: SharedPage):
        self.opts, self.transport, self.sock, self.daemon = opts, transport, sock, daemon
        self.keep = keep
        self.shared = shared
        self.made_node: tuple[str, int] | None = None
        self.connections: list[str] = []
        self.aborted = False
        self.stuck_since: float | None = None
        self.last_progress: int | None = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _set_name(b"kvcpu-helper")
        self._close_other_fds()
        timeout = self.opts.request_timeout
        tick = None if timeout is None else max(0.02, min(0.25, timeout / 10))
        while True:
            try:
                ready, _, _ = select.select([self.sock], [], [], tick if self.connections or
                                            (timeout and self.transport == "cuse") else None)
            except InterruptedError:
                continue
            if ready:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the daemon is gone, however it ended
                    break
                self._handle(json.loads(data))
            if timeout is not None:
                self._watch(timeout)
        self.teardown()
        self._final()
        return 0

    def _close_other_fds(self) -> None:
        keep = {0, 1, 2, self.sock.fileno(), *self.keep}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("op") == "ready":
            if message.get("made_node"):
                self.made_node = (message["made_node"], int(message["rdev"]))
            self._find_connections()
        elif message.get("op") == "teardown":
            self.teardown()
            with contextlib.suppress(OSError):
                self.sock.send(b'{"op": "done"}')

    def _our_connections(self) -> list[str]:
        """The FUSE connections of our mounts: the attribute mount and, with
        the FUSE transport, the device file's own mount on top of it."""
        opts = self.opts
        conns = []
        if mounts.is_ours(opts.attr_dir, opts.name):
            conns.append(mounts.fuse_connection(opts.attr_dir))
            if mounts.is_our_device_mount(opts.attr_dir, opts.name):
                conns.append(mounts.fuse_connection(opts.attr_dir, DEVICE_FILE))
        return [c for c in conns if c is not None]

    def _find_connections(self) -> None:
        conns = self._our_connections()
        if conns and not all((FUSECTL_DIR / c).is_dir() for c in conns):
            if mounts.mount_fusectl():
                log.info("%s: mounted the FUSE control file system on %s", self.opts.name, FUSECTL_DIR)
        self.connections = [c for c in conns if (FUSECTL_DIR / c).is_dir()]
        if self.opts.request_timeout is not None and len(self.connections) < len(conns):
            log.warning("%s: %s is missing: --request-timeout cannot abort FUSE requests",
                        self.opts.name, FUSECTL_DIR)

    # -- the request timeout ----------------------------------------------------

    def _progress(self) -> int | None:
        """System calls the daemon has made (a request read, a reply written)."""
        try:
            text = pathlib.Path(f"/proc/{self.daemon}/io").read_text()
        except OSError:
            return None
        counts = dict(line.split(": ") for line in text.splitlines() if ": " in line)
        return int(counts.get("syscr", 0)) + int(counts.get("syscw", 0))

    def _stopped(self) -> bool:
        try:
            stat_line = pathlib.Path(f"/proc/{self.daemon}/stat").read_text()
        except OSError:
            return False
        return stat_line.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def _waiting(self) -> int:
        total = 0
        for conn in self.connections:
            with contextlib.suppress(OSError, ValueError):
                total += int((FUSECTL_DIR / conn / "waiting").read_text())
        return total

    def _watch(self, timeout: float) -> None:
        if self.aborted:
            return
        progress = self._progress()
        if progress is None:
            return
        served, held, held_due_ns = self.shared.read()
        progress += served
        # Replies the daemon holds back for an injected latency are waiting
        # by design, until they are overdue (a daemon stopped while holding
        # them is stuck all the same).
        if held and time.monotonic_ns() > held_due_ns + int(timeout * 1e9):
            held = 0
        waiting = self._waiting()
        stuck = waiting > held or (self.transport == "cuse" and self._stopped())
        now = time.monotonic()
        if not stuck or progress != self.last_progress:
            self.stuck_since = now if stuck else None
        elif self.stuck_since is None:
            self.stuck_since = now
        self.last_progress = progress
        if self.stuck_since is not None and now - self.stuck_since >= timeout:
            self._abort(waiting, timeout)

    def _abort(self, waiting: int, timeout: float) -> None:
        self.aborted = True
        state = "stopped" if self._stopped() else "not making progress"
        for conn in self.connections:
            with contextlib.suppress(OSError):
                (FUSECTL_DIR / conn / "abort").write_text("1")
        log.error("%s: %d request(s) waited %.1f s on the daemon (pid %d, %s): aborted its FUSE "
                  "connection; clients get ECONNABORTED/ENOTCONN", self.opts.name, waiting, timeout,
                  self.daemon, state)
        # CUSE has no connection to abort.  Over io_uring, a request handed
        # to a queue whose thread is stopped is not ended by the abort (its
        # entry waits for task work on that thread); closing the rings,
        # which the daemon's death does, ends it.
        if self.transport == "cuse" or (self.transport == "uring" and state == "stopped"):
            with contextlib.suppress(OSError):
                os.kill(self.daemon, signal.SIGKILL)
            log.error("%s: killed the daemon (pid %d): clients get %s", self.opts.name, self.daemon,
                      "ENODEV" if self.transport == "cuse" else "ECONNABORTED/ENOTCONN")

    # -- teardown -----------------------------------------------------------------

    def _our_link(self, path: pathlib.Path) -> bool:
        try:
            return path.is_symlink() and pathlib.Path(os.readlink(path)) in self.opts.link_targets()
        except OSError:
            return False

    def teardown(self) -> None:
        """Undo every root-only step (idempotent)."""
        opts = self.opts
        for link in (opts.node, opts.temp_link(self.daemon)):
            if self._our_link(link):
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
        cdi.remove(opts)
        if self.made_node is not None:
            path, rdev = self.made_node
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                    os.unlink(path)
            self.made_node = None
        if mounts.is_mounted(opts.attr_dir) and mounts.is_ours(opts.attr_dir, opts.name):
            for conn in self._our_connections():  # clients holding files get errors, not a hang
                with contextlib.suppress(OSError):
                    (FUSECTL_DIR / conn / "abort").write_text("1")
            try:  # detaching the attribute mount detaches the device file's on it
                mounts.detach(opts.attr_dir)
            except OSError as exc:
                log.warning("%s: %s", opts.name, exc)

    def _final(self) -> None:
        """The daemon is gone: its pid file (if it names it), its madvise
        socket and the mount point."""
        from .rundir import RunDir  # noqa: PLC0415 - no cycle at import

        run_dir_fd = self.keep[1] if len(self.keep) > 1 else -1
        if run_dir_fd >= 0:
            run_dir = RunDir(self.opts.run_dir, run_dir_fd)
            run_dir.remove_pid(self.opts.pid_name, self.daemon)
            st = run_dir.lstat(self.opts.madvise_name)
            if st is not None and stat.S_ISSOCK(st.st_mode):
                run_dir.unlink(self.opts.madvise_name)  # kvcpu-dev run's socket: the daemon gave up root
            with contextlib.suppress(OSError):
                os.rmdir(self.opts.name, dir_fd=run_dir_fd)
