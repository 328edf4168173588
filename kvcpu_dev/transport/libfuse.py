"""The attribute mount's libfuse session, driven by trio.

libfuse's own loops block a thread per session; here the session's
/dev/fuse descriptor is non-blocking and a trio task waits for it,
receives one request and lets libfuse dispatch it to the
``extern "Python"`` callbacks below, which hand it to the mount's
``Operations`` (fs.NodeFS).  One thread, no locks needed, and requests are
answered in arrival order.  The device node itself is not served here: its
session belongs to the C fast path (fastpath.py).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import trio

from ..device.sysfs import Caller
from ..native._fuse import ffi, lib

log = logging.getLogger("kvcpu_dev")

#: Requests served back to back before yielding to other trio tasks ...
_BATCH = 64
#: ... or for this long (a reader of a large view keeps the queue full).
_BATCH_S = 0.002
#: But a large view's reader (its lookup, open, and each read that leaves
#: it mid-file: Operations.continues) sends its next request at once, and
#: yielding between them let the ring's drain and the model's work run
#: between every two of a 1 MiB read's requests, under a mixed flood ~3 ms
#: each time, most of a 100,000-block listing's time.  So the session waits
#: for that next request rather than yield: _SPIN_S without sleeping (it
#: comes 0.1-0.3 ms after a reply under a flood, and a thread of the daemon
#: that sleeps meanwhile, SCHED_IDLE under a flood (driver/priority.py),
#: may get no CPU back for milliseconds: up to 7 ms under 8 STEP floods),
#: then up to _SLEEP_MS in poll() (whose unit is the millisecond).
_SPIN_S = 0.0005
_SLEEP_MS = 1
#: A hold lasts this long at most, and the next begins no sooner after it
#: than it lasted: the drain waits meanwhile (the ring, 16,384 events,
#: holds ~90 ms of the fastest flood), and readers reading on and on get
#: half the loop at most.
_HOLD_S = 0.025


def _comes_soon(next_request: select.poll) -> bool:
    """Whether a request comes within _SPIN_S (spinning) and _SLEEP_MS."""
    spin_until = time.monotonic() + _SPIN_S
    while not next_request.poll(0):
        if time.monotonic() >= spin_until:
            return bool(next_request.poll(_SLEEP_MS))
    return True


class _Holds:
    """When the session keeps the loop for a reader whose next request
    follows at once (see _HOLD_S)."""

    def __init__(self) -> None:
        self.began: float | None = None  # the hold under way, if any
        self._calm_until = 0.0

    def keep(self, continues: bool, next_request: select.poll) -> bool:
        """Whether to serve the next request before yielding."""
        if not continues:
            return False
        now = time.monotonic()
        if self.began is None:
            if now < self._calm_until:
                return False
            self.began = now
        return now - self.began < _HOLD_S and _comes_soon(next_request)

    def end(self) -> None:
        """The loop is given back: a hold under way ends, and rests as long."""
        if self.began is not None:
            now = time.monotonic()
            self._calm_until = now + (now - self.began)
            self.began = None


class Session:
    """One libfuse session and the object whose methods answer it."""

    def __init__(self, se: Any, ops: Operations, handle: Any, kind: str, what: str):
        self._se = se
        self._ops = ops
        self._handle = handle  # keeps the userdata handle alive
        self.kind = kind
        self.what = what
        self.closed = False

    @property
    def fd(self) -> int:
        """The session's /dev/fuse fd (readable while a request waits)."""
        fd: int = lib.fuse_session_fd(self._se)
        return fd

    @classmethod
    def mount_fuse(cls, ops: Operations, mountpoint: str, options: str) -> Session:
        handle = ffi.new_handle(ops)
        se = lib.kv_fuse_new(options.encode(), handle)
        if se == ffi.NULL:
            raise OSError(errno.EINVAL, f"fuse_session_new failed (options {options!r})")
        if lib.kv_fuse_mount(se, mountpoint.encode()) != 0:
            lib.fuse_session_destroy(se)
            raise OSError(errno.EIO, f"cannot mount FUSE at {mountpoint}")
        return cls(se, ops, handle, "fuse", mountpoint)

    async def serve(self, mark: Any = None) -> None:
        """Answer requests until the kernel ends the session (unmount) or
        the task is cancelled, yielding to other trio tasks after _BATCH
        requests in a row or _BATCH_S of them, unless the next request
        follows at once (_Holds).  ``mark``: a watcher's (driver/priority.py's
        Mark.words), told of each request served."""
        se, ops = self._se, self._ops
        fd = lib.fuse_session_fd(se)
        os.set_blocking(fd, False)
        next_request = select.poll()
        next_request.register(fd, select.POLLIN)
        buf = ffi.new("struct fuse_buf *")
        serve_one = lib.kv_fuse_serve_one
        mark = ffi.NULL if mark is None else mark
        served = 0
        since = time.monotonic()
        holds = _Holds()
        try:
            while True:
                res = serve_one(se, buf, mark)
                if res > 0:
                    served += 1
                    if holds.keep(ops.continues(), next_request):  # continues() is asked every time
                        continue
                    if holds.began is not None or served % _BATCH == 0 or time.monotonic() - since > _BATCH_S:
                        holds.end()
                        await trio.lowlevel.checkpoint()
                        since = time.monotonic()
                elif res == -errno.EAGAIN:
                    holds.end()
                    await trio.lowlevel.wait_readable(fd)
                elif res == -errno.EINTR:
                    continue
                else:  # 0: session ended (unmount, DESTROY); < 0: device gone
                    if res < 0:
                        log.warning("%s %s: %s", self.kind, self.what, os.strerror(-res))
                    return
        finally:
            if buf.mem != ffi.NULL:
                lib.free(buf.mem)
                buf.mem = ffi.NULL

    def close(self) -> None:
        """Unmount and free the session."""
        if self.closed:
            return
        self.closed = True
        lib.fuse_session_unmount(self._se)
        lib.fuse_session_destroy(self._se)


# -- callbacks: C -> the session's Operations --------------------------------
#
# The contract, as pyfuse3's Operations: a handler returns its data or
# raises OSError(errno); the binding sends every reply, exactly once.
# Anything else a handler raises is a bug: logged, answered EIO, so the
# calling process never hangs.


class Attr(NamedTuple):
    """What a lookup, getattr or setattr answers about an inode."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int


class DirEntry(NamedTuple):
    name: bytes
    ino: int
    mode: int


class Operations(Protocol):
    """What answers a FUSE mount (see fs.NodeFS)."""

    #: Seconds the kernel may cache names and attributes.
    cache_seconds: float

    def started(self) -> None: ...
    def continues(self) -> bool:
        """Whether the request just answered is one whose next follows at
        once (a large view's lookup, open, or read that left its reader
        mid-file); asked once after each request."""
    def lookup(self, parent: int, name: bytes) -> Attr: ...
    def getattr(self, ino: int) -> Attr: ...
    def setattr(self, ino: int, to_set: int) -> Attr: ...
    def open(self, ino: int, flags: int) -> int: ...
    def opendir(self, ino: int) -> int: ...
    def read(self, ino: int, size: int, off: int, fh: int) -> bytes: ...
    def write(self, ino: int, data: bytes, off: int, fh: int, caller: Caller) -> int: ...
    def readdir(self, ino: int, off: int) -> Sequence[DirEntry]: ...
    def release(self, ino: int, fh: int) -> None: ...


def _ops(req: Any) -> Operations:
    ops: Operations = ffi.from_handle(lib.fuse_req_userdata(req))
    return ops


def _caller(req: Any) -> Caller:
    """The request's uid, gid and pid, as the kernel gave them."""
    ctx = lib.fuse_req_ctx(req)
    return Caller(int(ctx.uid), int(ctx.gid), int(ctx.pid))


def _answer(req: Any, reply: Callable[[Any, Any], object], handler: Callable[..., Any], *args: Any) -> None:
    try:
        result = handler(*args)
    except OSError as exc:
        lib.fuse_reply_err(req, exc.errno or errno.EIO)
    except Exception:
        log.exception("internal error in %s", getattr(handler, "__name__", handler))
        lib.fuse_reply_err(req, errno.EIO)
    else:
        reply(req, result)


def _reply_entry(req: Any, a: Attr) -> None:
    lib.kv_reply_entry(req, a.ino, a.mode, a.nlink, a.uid, a.gid, a.size, _ops(req).cache_seconds)


def _reply_attr(req: Any, a: Attr) -> None:
    lib.kv_reply_attr(req, a.ino, a.mode, a.nlink, a.uid, a.gid, a.size, _ops(req).cache_seconds)


def _reply_none(req: Any, _: None) -> None:
    lib.fuse_reply_err(req, 0)


def _reply_data(req: Any, data: bytes) -> None:
    lib.fuse_reply_buf(req, data, len(data))


def _reply_written(req: Any, count: int) -> None:
    lib.fuse_reply_write(req, count)


def _reply_open(fi: Any, direct_io: bool) -> Callable[[Any, int], None]:
    def reply(req: Any, fh: int) -> None:
        lib.kv_reply_open(req, fi, fh, direct_io)

    return reply


def _reply_dir(size: int, off: int) -> Callable[[Any, Sequence[DirEntry]], None]:
    """Pack entries from ``off`` on until the kernel's buffer is full."""

    def reply(req: Any, entries: Sequence[DirEntry]) -> None:
        buf = ffi.new("char[]", size)
        pos = 0
        for index in range(off, len(entries)):
            e = entries[index]
            need = lib.kv_add_direntry(req, buf + pos, size - pos, e.name, e.ino, e.mode, index + 1)
            if pos + need > size:
                break
            pos += need
        lib.fuse_reply_buf(req, buf, pos)

    return reply


_Callback = TypeVar("_Callback", bound=Callable[..., None])


def _extern(callback: _Callback) -> _Callback:
    """``@ffi.def_extern()``, typed: cffi binds ``callback`` to the
    ``extern "Python"`` function of its name and returns it unchanged."""
    ffi.def_extern()(callback)
    return callback


@_extern
def kv_ll_init(userdata: Any, conn: Any) -> None:
    ffi.from_handle(userdata).started()


@_extern
def kv_ll_lookup(req: Any, parent: Any, name: Any) -> None:
    _answer(req, _reply_entry, _ops(req).lookup, parent, ffi.string(name))


@_extern
def kv_ll_getattr(req: Any, ino: Any, fi: Any) -> None:
    _answer(req, _reply_attr, _ops(req).getattr, ino)


@_extern
def kv_ll_setattr(req: Any, ino: Any, attr: Any, to_set: Any, fi: Any) -> None:
    _answer(req, _reply_attr, _ops(req).setattr, ino, to_set)


@_extern
def kv_ll_open(req: Any, ino: Any, fi: Any) -> None:
    _answer(req, _reply_open(fi, True), _ops(req).open, ino, fi.flags)


@_extern
def kv_ll_opendir(req: Any, ino: Any, fi: Any) -> None:
    _answer(req, _reply_open(fi, False), _ops(req).opendir, ino)


@_extern
def kv_ll_read(req: Any, ino: Any, size: Any, off: Any, fi: Any) -> None:
    _answer(req, _reply_data, _ops(req).read, ino, size, off, fi.fh)


@_extern
def kv_ll_write(req: Any, ino: Any, buf: Any, size: Any, off: Any, fi: Any) -> None:
    _answer(req, _reply_written, _ops(req).write, ino, ffi.buffer(buf, size)[:], off, fi.fh, _caller(req))


@_extern
def kv_ll_readdir(req: Any, ino: Any, size: Any, off: Any, fi: Any) -> None:
    _answer(req, _reply_dir(size, off), _ops(req).readdir, ino, off)


@_extern
def kv_ll_release(req: Any, ino: Any, fi: Any) -> None:
    _answer(req, _reply_none, _ops(req).release, ino, fi.fh)


@_extern
def kv_ll_ioctl(req: Any, ino: Any, cmd: Any, arg: Any, fi: Any, flags: Any, in_buf: Any, in_bufsz: Any, out_bufsz: Any) -> None:
    # Attribute files and the directory have no ioctls; the device's own
    # file is another mount, answered in C (fastpath.c).
    lib.fuse_reply_err(req, errno.ENOTTY)
