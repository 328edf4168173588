"""One running device: the core, its FUSE mount, its node, and the trio
loop serving them until told to stop.

Layout for a device named N (paths configurable for tests):
  <run_dir>/N/            FUSE mount: the driver's attribute files (and the
                          model's), plus ``device`` with the FUSE transport
  <dev_dir>/N             the node: a symlink to <run_dir>/N/device (FUSE),
                          or the real character device /dev/N (CUSE)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import signal
import stat
from dataclasses import dataclass
from typing import Any, Callable

import trio

from . import lowlevel, mounts
from .core import Device
from .cuse import CuseNode
from .fs import DEVICE_FILE, NodeFS, mount_options

log = logging.getLogger("kvcpu_dev")

#: How long the kernel may take to create /dev/N after CUSE_INIT.
NODE_APPEAR_SECONDS = 5.0


@dataclass
class Options:
    name: str = "kvcpu0"
    transport: str = "auto"  # auto | cuse | fuse
    run_dir: pathlib.Path = pathlib.Path("/run/kvcpu")
    dev_dir: pathlib.Path = pathlib.Path("/dev")
    cuse_path: pathlib.Path = pathlib.Path("/dev/cuse")
    mode: int = 0o600
    gid: int = 0
    trace: bool = False
    model: Any = None  # a kvcpu_dev.model.DeviceModel, or None for registers only

    @property
    def attr_dir(self) -> pathlib.Path:
        return self.run_dir / self.name

    @property
    def node(self) -> pathlib.Path:
        return self.dev_dir / self.name

    @property
    def cuse_node(self) -> pathlib.Path:
        """Where the kernel puts a CUSE device, whatever --dev-dir says."""
        return pathlib.Path("/dev") / self.name

    @property
    def device_file(self) -> pathlib.Path:
        """The FUSE transport's ioctl file, the node's link target."""
        return self.attr_dir / DEVICE_FILE

    def resolved_transport(self) -> str:
        if self.transport != "auto":
            return self.transport
        return "cuse" if self.cuse_path.exists() else "fuse"


class Server:
    """Owns every resource one device holds, and gives each back on close."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.transport = opts.resolved_transport()
        self.device = Device(model=opts.model)
        self.device.tracing = opts.trace
        attributes = self.device.attributes()
        if opts.model is not None:
            attributes += opts.model.attributes()
        self.fs = NodeFS(
            self.device,
            attributes,
            device_file=self.transport == "fuse",
            device_mode=opts.mode,
            device_gid=opts.gid,
        )
        self.cuse = CuseNode(self.device) if self.transport == "cuse" else None
        self.sessions: list[lowlevel.Session] = []
        self._symlink: pathlib.Path | None = None
        self._made_node: pathlib.Path | None = None

    # -- setup ---------------------------------------------------------

    def open(self) -> None:
        """Mount and attach; raises OSError with a one-line reason."""
        opts = self.opts
        opts.attr_dir.mkdir(parents=True, exist_ok=True)
        self.sessions.append(
            lowlevel.Session.mount_fuse(self.fs, str(opts.attr_dir), mount_options(opts.name))
        )
        if self.cuse is not None:
            self.sessions.append(
                lowlevel.Session.open_cuse(self.cuse, opts.name, str(opts.cuse_path))
            )

    async def publish(self) -> None:
        """Once the kernel has finished INIT: make the node visible."""
        await self.fs.ready.wait()
        if self.cuse is not None:
            await self.cuse.ready.wait()
            await self._settle_cuse_node()
        else:
            self._link_node(self.opts.device_file)

    def _link_node(self, target: pathlib.Path) -> None:
        """The node as a link to ``target``, made under a temporary name and
        renamed into place: it is never half made."""
        node = self.opts.node
        tmp = node.with_name(f".{node.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(node)
        self._symlink = node

    async def _settle_cuse_node(self) -> None:
        """Wait for the kernel's /dev/N, then give it --mode and --group.

        devtmpfs creates the node in the kernel's /dev.  In a container /dev
        is a private tmpfs and the node never shows there; then we make it
        ourselves from the numbers CUSE registered (and remove it on stop)."""
        node = self.opts.cuse_node
        with trio.move_on_after(NODE_APPEAR_SECONDS):
            while not node.exists():
                numbers = pathlib.Path("/sys/class/cuse", self.opts.name, "dev")
                if numbers.exists():
                    await self._make_node(node, numbers)
                    break
                await trio.sleep(0.01)
        if not node.exists():
            raise OSError(errno.ENODEV, f"CUSE did not create {node}")
        os.chown(node, 0, self.opts.gid)
        os.chmod(node, self.opts.mode)
        if self.opts.node != node:  # --dev-dir elsewhere: link to the real node
            self._link_node(node)

    async def _make_node(self, node: pathlib.Path, numbers: pathlib.Path) -> None:
        await trio.sleep(0.2)  # devtmpfs usually wins; give it the chance
        if node.exists():
            return
        major, minor = map(int, numbers.read_text().split(":"))
        try:
            os.mknod(node, stat.S_IFCHR | self.opts.mode, os.makedev(major, minor))
        except FileExistsError:  # devtmpfs was only late
            return
        self._made_node = node
        log.info("%s: made %s (%d:%d) by hand: /dev is not devtmpfs", self.opts.name, node, major, minor)

    def describe(self) -> str:
        o = self.opts
        where = (
            f"{o.node} -> {o.device_file}"
            if self.transport == "fuse"
            else f"{o.cuse_node} (character device)"
        )
        return f"{o.name} ready: {where} via {self.transport}, attributes in {o.attr_dir}"

    # -- running -------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT or the kernel ends a session."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                for session in self.sessions:
                    nursery.start_soon(self._serve_then_stop, session, nursery.cancel_scope)
                await self.publish()
                if on_ready is not None:
                    on_ready()
                async for signum in signals:
                    log.info("%s: %s received, stopping", self.opts.name, signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    async def _serve_then_stop(self, session: lowlevel.Session, scope: trio.CancelScope) -> None:
        await session.serve(self._between_requests)
        log.warning("%s: the kernel ended the %s session; stopping", self.opts.name, session.kind)
        scope.cancel()

    def _between_requests(self) -> None:
        """The device's own work (the HEPC scan a STEP rang for), off the
        ioctl's critical path as on silicon: once the requests that had
        arrived are answered.  A STEP that arrives first supersedes it."""
        model = self.opts.model
        if model is not None and model.has_pending():
            try:
                model.run_pending()
            except Exception:  # a model bug must not take the node down
                log.exception("%s: device model failed; the node keeps serving", self.opts.name)

    # -- teardown ------------------------------------------------------

    def close(self) -> None:
        """Unlink the node, release CUSE, unmount; safe to call twice."""
        if self._symlink is not None:
            with contextlib.suppress(FileNotFoundError):
                if self._symlink.is_symlink():
                    self._symlink.unlink()
            self._symlink = None
        for session in reversed(self.sessions):
            session.close()
        self.sessions.clear()
        if self._made_node is not None:  # the kernel only removes its own
            with contextlib.suppress(FileNotFoundError):
                self._made_node.unlink()
            self._made_node = None
        # A mount that libfuse could not take down (busy) is detached lazily.
        mounts.detach_if_mounted(self.opts.attr_dir)
        with contextlib.suppress(OSError):
            self.opts.attr_dir.rmdir()


def node_kind(path: pathlib.Path) -> str:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISCHR(st.st_mode):
        return "chardev"
    return "other"
