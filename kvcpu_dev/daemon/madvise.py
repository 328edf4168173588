"""Where ``kvcpu-dev run`` hands a program's madvise listener to the daemon:
a unix socket at RUN_DIR/N.madvise, beside the pid file.

The socket is made by the root daemon in its run directory (root's, not
writable by others, so no one else can put anything at that name), with
the node's mode and group: who may open the node may connect, no one
else.  Connecting is not what authorizes a program, though.  ``run``
opens the node O_RDWR itself, as the invoking user, and sends that
descriptor with the listener (SCM_RIGHTS); a connection is accepted only
if the descriptor is this device's node (the FUSE device file's st_dev
and st_ino, or the CUSE node's st_rdev) opened for reading and writing.
So sending hints needs exactly what opening the node needs, on either
transport, with --mode and --group governing both alike.  The peer's
credentials (SO_PEERCRED) are logged.

One request per connection, one line back::

    run -> daemon   b"kvcpu-run 1 COMM\\n", with [listener fd, node fd]
    daemon -> run   b"ok\\n" | b"error MESSAGE\\n"

The supervisor then owns the listener (driver/madvise.py, native/madvise.c).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import pathlib
import socket
import stat
from collections.abc import Callable, Iterator

import trio

from ..driver.madvise import MadviseSupervisor

log = logging.getLogger("kvcpu_dev")

#: The request's first words.
HELLO = b"kvcpu-run 1 "
#: What a connection may take before it is dropped (seconds).
REQUEST_TIMEOUT_S = 5.0
#: What /proc/self/fd/N names a seccomp listener as.
LISTENER_LINK = "anon_inode:seccomp notify"

#: (st_dev, st_ino) of the FUSE device file, or ("rdev", st_rdev) of the CUSE node.
NodeId = tuple[str, int, int]


def node_id(st: os.stat_result, transport: str) -> NodeId:
    if transport == "cuse":
        return ("chr", st.st_rdev, 0) if stat.S_ISCHR(st.st_mode) else ("none", 0, 0)
    return ("file", st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else ("none", 0, 0)


#: sun_path holds 108 bytes with its NUL; a longer path is reached
#: through the directory's descriptor.
_SUN_PATH_MAX = 107


@contextlib.contextmanager
def socket_address(path: pathlib.Path) -> Iterator[str]:
    """An address for ``path`` that fits sun_path: the path itself, or
    /proc/self/fd/N/NAME with N its directory, open while in use (a deep
    --run-dir, such as a test's temporary directory)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dfd}/{path.name}"
    finally:
        os.close(dfd)


class Refused(Exception):
    """Why a request was refused, as one line for ``run`` to print."""


class MadviseSocket:
    """The listening socket and what it accepts."""

    def __init__(self, path: pathlib.Path, mode: int, gid: int, name: str):
        self.path, self.name = path, name
        self.accepted = 0
        self.refused = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale one: the lock is ours, the directory root's
            old = os.umask(0o177)  # no one may connect before the mode is set
            try:
                with socket_address(path) as address:
                    sock.bind(address)
            finally:
                os.umask(old)
            os.chown(path, 0, gid)
            os.chmod(path, mode & 0o666)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._ino = path.lstat().st_ino

    def close(self, unlink: bool = True) -> None:
        """Stop listening; remove the socket if it is still ours (a
        daemon that gave up root leaves that to its helper)."""
        if self.sock.fileno() >= 0:
            self.sock.close()
        if unlink:
            with contextlib.suppress(OSError):
                if self.path.lstat().st_ino == self._ino:
                    self.path.unlink()

    async def serve(self, supervisor: MadviseSupervisor, node: Callable[[], NodeId | None],
                    transport: str) -> None:
        """Accept requests until cancelled."""
        listening = trio.socket.from_stdlib_socket(self.sock)
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listening.accept()
                nursery.start_soon(self._handle, conn, supervisor, node, transport)

    async def _handle(self, conn: trio.socket.SocketType, supervisor: MadviseSupervisor,
                      node: Callable[[], NodeId | None], transport: str) -> None:
        with conn:
            fds: list[int] = []
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                pid, uid, gid = array.array("i", creds).tolist()
                with trio.move_on_after(REQUEST_TIMEOUT_S) as scope:
                    msg, anc, _flags, _addr = await conn.recvmsg(
                        256, socket.CMSG_SPACE(2 * 4) * 2, socket.MSG_CMSG_CLOEXEC)
                if scope.cancelled_caught:
                    return
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        got = array.array("i")
                        got.frombytes(data[:len(data) - len(data) % 4])
                        fds += got.tolist()
                try:
                    comm = self._check(msg, fds, node(), transport)
                    listener = fds.pop(0)
                    supervisor.add(listener)  # the supervisor's now, even if it raises
                except Refused as exc:
                    self.refused += 1
                    log.warning("%s: madvise: refused pid %d (uid %d, gid %d): %s", self.name, pid, uid, gid, exc)
                    await conn.send(f"error {exc}\n".encode())
                    return
                except OSError as exc:
                    self.refused += 1
                    log.warning("%s: madvise: cannot supervise pid %d: %s", self.name, pid, exc.strerror or exc)
                    await conn.send(f"error {exc.strerror or exc}\n".encode())
                    return
                self.accepted += 1
                log.info("%s: madvise: supervising %r, pid %d (uid %d, gid %d)", self.name, comm, pid, uid, gid)
                await conn.send(b"ok\n")
            except OSError:  # the peer went away: its listener (if we took it) hangs up by itself
                pass
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    @staticmethod
    def _check(msg: bytes, fds: list[int], ours: NodeId | None, transport: str) -> str:
        """The request's command name, if it may be served; else Refused."""
        if not msg.startswith(HELLO) or len(fds) != 2:
            raise Refused("not a kvcpu-dev run request")
        listener, node = fds
        if ours is None:
            raise Refused("the device is not published yet")
        st = os.fstat(node)
        if node_id(st, transport) != ours:
            raise Refused("the descriptor sent is not this device's node")
        if fcntl.fcntl(node, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDWR:
            raise Refused("the node was not opened for reading and writing")
        try:
            link = os.readlink(f"/proc/self/fd/{listener}")
        except OSError:
            link = ""
        if link != LISTENER_LINK:
            raise Refused("the descriptor sent is not a seccomp listener")
        return msg[len(HELLO):].decode(errors="replace").strip()[:64]
