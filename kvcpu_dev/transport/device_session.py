"""The device's own session, served by C threads: the device file's FUSE
mount (classic /dev/fuse through libfuse, or FUSE over io_uring with a
queue per CPU), or the CUSE character device.  Python only makes, mounts,
starts and closes it; every request is answered in C.  The transports
share one interface (``DeviceSession``), so the server does not care
which it runs."""

from __future__ import annotations

import errno
import os
from typing import Any, Protocol

import trio

from ..driver.handle import NativeDriver
from ..native._fuse import ffi, lib


class DeviceSession(Protocol):
    """What the server does with the device's session, whatever its transport."""

    kind: str  # fuse, uring or cuse
    what: str  # the device file, or the CUSE device's name

    def mount(self) -> None: ...
    def start(self, poll_us: int = 0) -> None: ...
    async def wait_ready(self) -> None: ...
    async def wait_exited(self) -> None: ...
    def release_held(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, object]: ...


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

    def stats(self) -> dict[str, object]:
        return {}

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


class UringSession:
    """The device file over FUSE io_uring (native/uring.c): one queue per
    possible CPU, each answered by a thread pinned to that CPU, and a
    /dev/fuse reader for INIT and what the rings do not carry."""

    kind = "uring"

    def __init__(self, driver: NativeDriver, path: str, source: str, fstype: str,
                 mode: int, uid: int, gid: int):
        err = ffi.new("int *")
        u = lib.kv_uring_new(driver.handle, mode, uid, gid, err)
        if u == ffi.NULL:
            raise OSError(err[0], f"cannot set up FUSE over io_uring: {os.strerror(err[0])}")
        self.driver = driver
        self._u = u
        self.what = path
        self._source, self._fstype = source, fstype

    @property
    def queues(self) -> int:
        return int(lib.kv_uring_queues(self._u))

    def mount(self) -> None:
        """mount(2) over the attribute mount's ``device`` entry: from a
        worker thread while that mount is served (see FastSession.mount)."""
        err = lib.kv_uring_mount(self._u, self.what.encode(), self._source.encode(), self._fstype.encode())
        if err:
            raise OSError(err, f"cannot mount the device file at {self.what}: {os.strerror(err)}")

    def start(self, poll_us: int = 0) -> None:
        """The /dev/fuse reader (INIT first).  ``poll_us``: the rings never
        spin; they sleep in io_uring_enter until a request comes."""
        err = lib.kv_uring_start(self._u, self.driver.exit_fd)
        if err:
            raise OSError(err, f"cannot start the FUSE reader: {os.strerror(err)}")

    async def wait_ready(self) -> None:
        """Until INIT is answered and every queue registered; raises OSError
        if registering failed, and says so if the kernel kept the mount on
        /dev/fuse (it did not offer io_uring at INIT)."""
        while (state := lib.kv_uring_ready(self._u)) == 0:
            await trio.sleep(0.001)
        if state < 0:
            raise OSError(-state, f"FUSE over io_uring: registering the queues failed: {os.strerror(-state)}")
        if not lib.kv_uring_active(self._u):
            raise OSError(errno.EOPNOTSUPP, "the kernel did not offer FUSE over io_uring at FUSE_INIT "
                                            "(/sys/module/fuse/parameters/enable_uring)")

    async def wait_exited(self) -> None:
        while not lib.kv_uring_exited(self._u):
            await trio.lowlevel.wait_readable(self.driver.exit_fd)

    def release_held(self) -> None:
        if self._u is not None:
            lib.kv_uring_release_held(self._u)

    def stats(self) -> dict[str, object]:
        """How many queues, and the requests each answered (by CPU)."""
        if self._u is None:
            return {}
        out = ffi.new("uint64_t[]", self.queues)
        n = lib.kv_uring_served(self._u, out, self.queues)
        return {"uring_queues": n, "uring_queue_served": ",".join(str(out[i]) for i in range(n))}

    def close(self) -> None:
        """Send what is held, unmount, stop every thread, free."""
        if self._u is not None:
            lib.kv_uring_free(self._u)
            self._u = None
