"""The device's own libfuse session, served by the C fast path's thread:
the device file's FUSE mount, or the CUSE character device.  Python only
makes, mounts, starts and closes it; every request is answered in C."""

from __future__ import annotations

import errno
import os
from typing import Any

import trio

from ..driver.handle import NativeDriver
from ..native._fuse import ffi, lib


class FastSession:
    """The device's own libfuse session (the device file's FUSE mount, or
    the CUSE device), served by the C thread from ``start()`` to ``close()``."""

    def __init__(self, driver: NativeDriver, se: Any, kind: str, what: str):
        self.driver = driver
        self._se = se
        self.kind = kind
        self.what = what
        self._mounted = False

    @classmethod
    def for_file(cls, driver: NativeDriver, path: str, options: str,
                 mode: int, uid: int, gid: int) -> FastSession:
        se = lib.kv_fast_fuse_new(driver.handle, options.encode(), mode, uid, gid)
        if se == ffi.NULL:
            raise OSError(errno.EINVAL, f"fuse_session_new failed (options {options!r})")
        return cls(driver, se, "fuse", path)

    @classmethod
    def for_cuse(cls, driver: NativeDriver, devname: str, cuse_path: str) -> FastSession:
        se = lib.kv_fast_cuse_new(driver.handle, devname.encode())
        if se == ffi.NULL:
            raise OSError(errno.EINVAL, "cuse_lowlevel_new failed")
        session = cls(driver, se, "cuse", devname)
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
        session._mounted = True
        return session

    def mount(self) -> None:
        """FUSE: mount over the attribute mount's ``device`` entry.  Blocks
        until the kernel has looked the path up, which the attribute mount
        answers: call it from a worker thread while that mount is served."""
        if lib.kv_fuse_mount(self._se, self.what.encode()) != 0:
            raise OSError(errno.EIO, f"cannot mount the device file at {self.what}")
        self._mounted = True

    def start(self, poll_us: int = 0) -> None:
        err = lib.kv_fast_start(self.driver.handle, self._se, poll_us, self.driver.exit_fd)
        if err:
            raise OSError(err, f"cannot start the fast-path thread: {os.strerror(err)}")

    async def wait_ready(self) -> None:
        """Until the kernel's INIT (CUSE: INIT done) has been answered."""
        while not lib.kv_fast_ready(self.driver.handle):
            await trio.sleep(0.001)

    async def wait_exited(self) -> None:
        """Until the session ends (unmounted or released by the kernel):
        the thread writes the driver's exit eventfd, so waiting costs no
        wake-up."""
        while not lib.kv_fast_exited(self.driver.handle):
            await trio.lowlevel.wait_readable(self.driver.exit_fd)

    def release_held(self) -> None:
        """Send the replies an injected latency holds now (a stop waits for
        no latency), while the session can still carry them."""
        if self._se is not None:
            lib.kv_fast_release_held(self.driver.handle)

    def close(self) -> None:
        """Send what is held, unmount (FUSE; ends the thread's read), stop
        the thread, free."""
        if self._se is None:
            return
        self.release_held()
        if self._mounted and self.kind == "fuse":
            lib.fuse_session_unmount(self._se)
        lib.kv_fast_stop(self.driver.handle)
        lib.fuse_session_destroy(self._se)
        self._se = None
