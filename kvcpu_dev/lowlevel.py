"""libfuse3 sessions (FUSE mounts and CUSE devices) driven by trio.

libfuse's own loops block a thread per session; here each session's
/dev/fuse (or /dev/cuse) descriptor is non-blocking and a trio task waits
for it, receives one request and lets libfuse dispatch it to the
``extern "Python"`` callbacks below, which hand it to the session's owner:
a ``Handler`` (see fs.py and cuse.py).  One thread, no locks needed, and
requests are answered in arrival order.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable

import trio

from .native._fuse import ffi, lib

log = logging.getLogger("kvcpu_dev")

#: Requests served back to back before yielding to other trio tasks.
_BATCH = 64


class Session:
    """One libfuse session and the object whose methods answer it."""

    def __init__(self, se: Any, handle: Any, kind: str, what: str):
        self._se = se
        self._handle = handle  # keeps the userdata handle alive
        self.kind = kind
        self.what = what
        self.closed = False

    @classmethod
    def mount_fuse(cls, handler: Any, mountpoint: str, options: str) -> "Session":
        handle = ffi.new_handle(handler)
        se = lib.kv_fuse_new(options.encode(), handle)
        if se == ffi.NULL:
            raise OSError(errno.EINVAL, f"fuse_session_new failed (options {options!r})")
        if lib.kv_fuse_mount(se, mountpoint.encode()) != 0:
            lib.fuse_session_destroy(se)
            raise OSError(errno.EIO, f"cannot mount FUSE at {mountpoint}")
        return cls(se, handle, "fuse", mountpoint)

    @classmethod
    def open_cuse(cls, handler: Any, devname: str, cuse_path: str = "/dev/cuse") -> "Session":
        handle = ffi.new_handle(handler)
        se = lib.kv_cuse_new(devname.encode(), 0, 0, handle)
        if se == ffi.NULL:
            raise OSError(errno.EINVAL, "cuse_lowlevel_new failed")
        try:
            fd = os.open(cuse_path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            lib.fuse_session_destroy(se)
            raise
        # libfuse takes an already-open device as the mountpoint /dev/fd/N.
        if lib.kv_fuse_mount(se, f"/dev/fd/{fd}".encode()) != 0:
            os.close(fd)
            lib.fuse_session_destroy(se)
            raise OSError(errno.EIO, f"cannot attach CUSE session to {cuse_path}")
        return cls(se, handle, "cuse", devname)

    async def serve(self, between: Callable[[], None] | None = None) -> None:
        """Answer requests until the kernel ends the session (unmount,
        device release) or the task is cancelled.  ``between`` runs when
        the queue has run dry, and after every _BATCH requests in a row so
        that a flood of requests cannot starve it."""
        se = self._se
        fd = lib.fuse_session_fd(se)
        os.set_blocking(fd, False)
        buf = ffi.new("struct fuse_buf *")
        receive, process = lib.fuse_session_receive_buf, lib.fuse_session_process_buf
        served = 0
        try:
            while True:
                res = receive(se, buf)
                if res > 0:
                    process(se, buf)
                    served += 1
                    if served % _BATCH == 0:
                        if between is not None:
                            between()
                        await trio.lowlevel.checkpoint()
                elif res == -errno.EAGAIN:
                    if between is not None:
                        between()
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
        """Unmount (FUSE) or release the device (CUSE) and free the session."""
        if self.closed:
            return
        self.closed = True
        if self.kind == "fuse":
            lib.fuse_session_unmount(self._se)
        lib.fuse_session_destroy(self._se)


# -- callbacks: C -> the session's handler ---------------------------------
#
# Each answers its request exactly once.  A handler raises OSError to answer
# with an errno; anything else is a bug, logged and answered with EIO so the
# calling process never hangs.


def _owner(req: Any) -> Any:
    return ffi.from_handle(lib.fuse_req_userdata(req))


def _guard(req: Any, fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(req, *args)
    except OSError as exc:
        lib.fuse_reply_err(req, exc.errno or errno.EIO)
    except Exception:
        log.exception("internal error in %s", getattr(fn, "__name__", fn))
        lib.fuse_reply_err(req, errno.EIO)


@ffi.def_extern()
def kv_ll_init(userdata, conn):  # noqa: ANN001
    ffi.from_handle(userdata).started()


@ffi.def_extern()
def kv_ll_lookup(req, parent, name):  # noqa: ANN001
    _guard(req, _owner(req).lookup, parent, ffi.string(name))


@ffi.def_extern()
def kv_ll_getattr(req, ino, fi):  # noqa: ANN001
    _guard(req, _owner(req).getattr, ino)


@ffi.def_extern()
def kv_ll_setattr(req, ino, attr, to_set, fi):  # noqa: ANN001
    _guard(req, _owner(req).setattr, ino, to_set)


@ffi.def_extern()
def kv_ll_open(req, ino, fi):  # noqa: ANN001
    _guard(req, _owner(req).open, ino, fi)


@ffi.def_extern()
def kv_ll_read(req, ino, size, off, fi):  # noqa: ANN001
    _guard(req, _owner(req).read, ino, size, off, fi.fh)


@ffi.def_extern()
def kv_ll_write(req, ino, buf, size, off, fi):  # noqa: ANN001
    _guard(req, _owner(req).write, ino, ffi.buffer(buf, size)[:], off, fi.fh)


@ffi.def_extern()
def kv_ll_release(req, ino, fi):  # noqa: ANN001
    _guard(req, _owner(req).release, ino, fi.fh)


@ffi.def_extern()
def kv_ll_opendir(req, ino, fi):  # noqa: ANN001
    _guard(req, _owner(req).opendir, ino, fi)


@ffi.def_extern()
def kv_ll_readdir(req, ino, size, off, fi):  # noqa: ANN001
    _guard(req, _owner(req).readdir, ino, size, off)


@ffi.def_extern()
def kv_ll_ioctl(req, ino, cmd, arg, fi, flags, in_buf, in_bufsz, out_bufsz):  # noqa: ANN001
    owner = _owner(req)
    if ino != owner.ioctl_ino or flags & lib.FUSE_IOCTL_DIR:
        lib.fuse_reply_err(req, errno.ENOTTY)  # a directory or an attribute
    else:
        _answer_ioctl(owner.device, req, cmd, in_buf, in_bufsz, out_bufsz)


@ffi.def_extern()
def kv_cuse_init_done(userdata):  # noqa: ANN001
    ffi.from_handle(userdata).started()


@ffi.def_extern()
def kv_cuse_open(req, fi):  # noqa: ANN001
    _guard(req, _owner(req).open, fi)


@ffi.def_extern()
def kv_cuse_read(req, size, off, fi):  # noqa: ANN001
    lib.fuse_reply_err(req, errno.EINVAL)  # the driver has no read()


@ffi.def_extern()
def kv_cuse_write(req, buf, size, off, fi):  # noqa: ANN001
    lib.fuse_reply_err(req, errno.EINVAL)  # nor write()


@ffi.def_extern()
def kv_cuse_release(req, fi):  # noqa: ANN001
    lib.fuse_reply_err(req, 0)


@ffi.def_extern()
def kv_cuse_ioctl(req, cmd, arg, fi, flags, in_buf, in_bufsz, out_bufsz):  # noqa: ANN001
    _answer_ioctl(_owner(req).device, req, cmd & 0xFFFFFFFF, in_buf, in_bufsz, out_bufsz)


def _answer_ioctl(device: Any, req: Any, cmd: int, in_buf: Any, in_bufsz: int, out_bufsz: int) -> None:
    """The hot path, shared by both transports: kept flat on purpose."""
    try:
        data = device.ioctl(cmd, ffi.buffer(in_buf, in_bufsz)[:] if in_bufsz else b"")
    except OSError as exc:
        lib.fuse_reply_err(req, exc.errno or errno.EIO)
    except Exception:
        log.exception("internal error in ioctl %#x", cmd)
        lib.fuse_reply_err(req, errno.EIO)
    else:
        lib.fuse_reply_ioctl(req, 0, data, min(len(data), out_bufsz))


def reply_open(req: Any, fi: Any, fh: int, direct_io: bool = True) -> None:
    lib.kv_reply_open(req, fi, fh, direct_io)
