"""One running device: its driver state and model, its mounts, its node,
and the trio loop serving them until told to stop.

Layout for a device named N (paths configurable for tests):
  <run_dir>/N/            FUSE mount: the driver's attribute files (and the
                          model's), plus ``device`` with the FUSE transport
  <dev_dir>/N             the node: a symlink to <run_dir>/N/device (FUSE),
                          or the real character device /dev/N (CUSE)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pathlib
import signal
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import mounts
from ..bench import Bench, controls
from ..device import tables
from ..device.sysfs import Attribute, Pieces
from ..driver.handle import NativeDriver
from ..driver.priority import Mark, PythonPriority
from ..driver.sinks import ModelSink, NoModel
from ..paths import DEVICE_FS_TYPE
from ..transport import libfuse, uring_param
from ..transport.attrfs import NodeFS, device_mount_options, mount_options
from ..transport.cuse_node import CuseNode
from ..transport.device_session import DeviceSession, FastSession, UringSession
from .madvise import MadviseSocket, NodeId, node_id
from .options import Options, is_device_file  # names every path a device uses

if TYPE_CHECKING:
    from ..bench.metrics import ModelSnapshot
    from ..model import DeviceModel

log = logging.getLogger("kvcpu_dev")

#: How often Python looks at the ring while commands come (the age at
#: which the fast path publishes a decode loop's run of STEPs).  Each look
#: costs Python 25-80 us whatever it finds, and every microsecond Python
#: runs is one a client on a shared CPU waits: at 10 ms, a decode loop's
#: cadence costs Python ~0.3% of a CPU, and the ring (16,384 events) still
#: holds 10 ms of the fastest flood with room to spare.
DRAIN_POLL_S = tables.RUN_PUBLISH_NS / 1e9
#: Empty looks before Python sleeps on the eventfd instead (0.1 s).
QUIET_POLLS = 10
#: The look while the fast path coalesces a flood of plain STEPs: it
#: publishes a flood's run only this old, and anything else it sees ends
#: the run at once, so Python only needs to look this often.  A wake-up of
#: Python every 10 ms alone cost a flood of 8 processes ~8%.
COALESCED_POLL_S = tables.FLOOD_RUN_PUBLISH_NS / 1e9
#: Events per drain step between trio checkpoints.
DRAIN_BATCH = 256
#: Model work per step between trio checkpoints.
MODEL_SLICE_S = 0.002


class Server:
    """Owns every resource one device holds, and gives each back on close.

    Three parties: the C fast path answers the node (its own session, its
    own thread); the trio loop serves the attribute mount and drains the
    event ring into the trace, the model and the listeners; neither waits
    for the other on a request, unless the ring is full (lossless)."""

    def __init__(self, opts: Options, model: DeviceModel | None = None):
        self.opts = opts
        self.transport = opts.resolved_transport()
        #: The device model, or NoModel (--no-model): only the reader and
        #: this loop call it.
        self.model: ModelSink = model if model is not None else NoModel()
        self.driver = NativeDriver(self.model, ring_events=opts.ring_events, coalesce=True,
                                   lossless=not opts.lossy)
        self.ring = self.driver.reader
        self.ring.tracing = opts.trace
        self.delivery_failures = 0  # commands the model or a listener raised on (_drain)
        self._scanned = 0.0  # when _model_work last ran a scan (monotonic)
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._trio_thread: threading.Thread | None = None
        attributes = self.driver.attributes()
        if model is not None:
            model.incremental = True
            attributes += [_synced(a, self._catch_up) for a in model.attributes()]
        attributes.append(Attribute("fastpath", self._show_fastpath))
        attributes += controls.attributes(self.driver)
        self.priority = PythonPriority(self.driver)
        #: Why readers will not be raised under a flood (None: they will),
        #: known once the watcher starts (publish), said after the ready
        #: line (daemon/serve.py).
        self.readers_unraised: str | None = None
        self.bench = Bench(
            self.driver, opts.name,
            model_config=(lambda: model.config.to_toml()) if model is not None else (lambda: None),
            model_view=self.model_view)
        try:
            self.bench.start(opts.record, opts.metrics, watch=self.priority.watch)
        except BaseException:
            self.bench.close()
            self.driver.close()
            raise
        attributes += self.bench.attributes()
        self.fs = NodeFS(
            attributes,
            device_file=is_device_file(self.transport),
            device_mode=opts.mode,
            device_gid=opts.gid,
            control_group=opts.control_group,
        )
        self.attr_session: libfuse.Session | None = None
        self.fast: DeviceSession | None = None
        self._attr_mark: Mark | None = None
        self.cuse_node = (
            CuseNode(opts.name, opts.cuse_node, opts.mode, opts.gid)
            if self.transport == "cuse" else None
        )
        self._symlink: pathlib.Path | None = None
        #: ``kvcpu-dev run``'s socket (made in open(), as root), and what
        #: identifies our node to it once published.
        self.madvise_socket: MadviseSocket | None = None
        self._node_id: NodeId | None = None

    # -- setup ---------------------------------------------------------

    def open(self) -> None:
        """Mount the attributes and, for CUSE, attach the device (both need
        root); raises OSError with a one-line reason.  The FUSE device file
        is mounted in run(), once the attribute mount answers lookups."""
        opts = self.opts
        opts.attr_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.madvise_socket = MadviseSocket(opts.madvise_socket, opts.mode, opts.gid, opts.name)
        except OSError as exc:  # the node is what a device is for: it serves without
            log.warning("%s: no madvise socket at %s (%s): kvcpu-dev run cannot reach this device",
                        opts.name, opts.madvise_socket, exc.strerror or exc)
        self.attr_session = libfuse.Session.mount_fuse(
            self.fs, str(opts.attr_dir), mount_options(opts.name))
        # This thread runs trio, which serves the mount: watched, so that a
        # reader's request never waits out a flood (driver/priority.py).
        self._attr_mark = self.priority.watch(threading.get_native_id(), self.attr_session.fd, idle=False)
        if self.transport == "cuse":
            self.fast = FastSession.for_cuse(self.driver, opts.name, str(opts.cuse_path))
        elif self.transport == "uring":
            uring_param.switch_on(opts.name)  # or UringUnavailable, one line
            self.fast = UringSession(self.driver, str(opts.device_file), opts.source, DEVICE_FS_TYPE,
                                     opts.mode, 0, opts.gid)
        else:
            self.fast = FastSession.for_file(
                self.driver, str(opts.device_file), device_mount_options(opts.name),
                opts.mode, 0, opts.gid)

    async def publish(self) -> None:
        """Once the kernel has finished INIT: make the node visible."""
        assert self.fast is not None
        await self.fs.ready.wait()
        if self.cuse_node is None:
            # The mount(2) looks `device` up in the attribute mount, which
            # this thread serves: mount from a worker thread.
            await trio.to_thread.run_sync(self.fast.mount)
        self.fast.start(self.opts.poll_us)
        # The watcher first: a thread inherits its creator's policy.
        self.readers_unraised = self.priority.start_watching()
        self.priority.lower()
        await self.fast.wait_ready()
        if self.cuse_node is not None:
            await self.cuse_node.settle()
            if self.opts.node != self.cuse_node.path:  # --dev-dir elsewhere
                self._link_node(self.cuse_node.path)
            st = os.stat(self.cuse_node.path)
        else:
            self._link_node(self.opts.device_file)
            # A lookup in the attribute mount, which this thread serves.
            st = await trio.to_thread.run_sync(os.stat, self.opts.device_file)
        self._node_id = node_id(st, self.transport)

    def _link_node(self, target: pathlib.Path) -> None:
        """The node as a link to ``target``, made under a temporary name and
        renamed into place: it is never half made."""
        node = self.opts.node
        tmp = self.opts.temp_link(os.getpid())
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(node)
        self._symlink = node

    def describe(self) -> str:
        o = self.opts
        where = (
            f"{o.node} -> {o.device_file}"
            if is_device_file(self.transport)
            else f"{o.cuse_node} (character device)"
        )
        via = self.transport
        if isinstance(self.fast, UringSession):
            via = f"fuse io_uring ({self.fast.queues} queues, one per CPU)"
        return f"{o.name} ready: {where} via {via}, attributes in {o.attr_dir}"

    # -- running -------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT or the kernel ends a session."""
        assert self.attr_session is not None and self.fast is not None
        self._trio_token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.current_thread()
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_attributes, self.attr_session, nursery.cancel_scope)
                    await self.publish()
                    nursery.start_soon(self._watch_fast_path, self.fast, nursery.cancel_scope)
                    nursery.start_soon(self._drain_loop)
                    if self.madvise_socket is not None:
                        nursery.start_soon(self.madvise_socket.serve, self.driver.madvise,
                                           lambda: self._node_id, self.transport)
                    if on_ready is not None:
                        on_ready()
                    async for signum in signals:
                        log.info("%s: %s received, stopping", self.opts.name, signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break
        finally:
            self._trio_token = None

    async def _serve_attributes(self, session: libfuse.Session, scope: trio.CancelScope) -> None:
        await session.serve(self._attr_mark.words if self._attr_mark is not None else None)
        log.warning("%s: the kernel ended the attribute mount; stopping", self.opts.name)
        scope.cancel()

    async def _watch_fast_path(self, fast: DeviceSession, scope: trio.CancelScope) -> None:
        await fast.wait_exited()
        log.warning("%s: the kernel ended the %s session; stopping", self.opts.name, fast.kind)
        scope.cancel()

    async def _drain_loop(self) -> None:
        """Feed the ring to the trace, the model and the listeners in
        batches.

        While commands come, Python looks at the ring every DRAIN_POLL_S on
        a timer: the fast path then makes no system call for Python (an
        eventfd write per decode step cost the client a wake-up of another
        CPU), except when a request finds the ring full and waits: it
        writes the eventfd, which ends the wait at once.  After QUIET_POLLS
        empty looks Python arms the eventfd and sleeps until the fast path
        signals the next command, so an idle daemon does not wake at all.
        While the fast path coalesces a flood of STEPs, it looks every
        COALESCED_POLL_S.  Model work runs in slices between batches: the
        scan a STEP rang for happens off the ioctl's path, as on silicon,
        and a hint over the whole address space never holds the attribute
        mount for long."""
        ring = self.ring
        quiet = 0
        coalesced = ring.steps_coalesced()
        while True:
            drained = self._drain()
            self._model_work(backlog=drained == DRAIN_BATCH)
            if drained == DRAIN_BATCH or self.model.busy():
                await trio.lowlevel.checkpoint()  # more is waiting
                continue
            # STEPs going into a run that is not published yet are commands
            # coming: arming now would end the grant in a flood's first 100 ms.
            before, coalesced = coalesced, ring.steps_coalesced()
            quiet = 0 if drained or coalesced != before else quiet + 1
            if quiet >= QUIET_POLLS and not ring.arm():
                self.priority.quiet()
                await self._wait_for_event()
                quiet = 0
            elif drained <= 1 and ring.flooded():
                # While the fast path coalesces a flood, look less often,
                # unless an event comes first: the next run, or the command
                # that ended the grant (STEPs fill the ring again after it).
                ring.watch(True)
                await self._wait_for_event(COALESCED_POLL_S)
                ring.watch(False)
            else:
                await self._wait_for_event(DRAIN_POLL_S)

    async def _wait_for_event(self, timeout: float = math.inf) -> None:
        """Until the fast path writes the eventfd (the ring is armed or
        watched, or a request waits for room), or ``timeout``."""
        with trio.move_on_after(timeout):
            await trio.lowlevel.wait_readable(self.driver.wake_fd)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.driver.wake_fd)

    def _drain(self, limit: int | None = DRAIN_BATCH, finish: bool = False) -> int:
        """One drain step.  A bug the model or a listener raises must not
        take the node down: the event that raised is skipped, the model
        says it is out of sync (it did not see that command whole), and the
        first such failure is logged with its traceback."""
        try:
            return self.ring.drain(limit, finish)
        except Exception:
            self.delivery_failures += 1
            if self.delivery_failures == 1:
                log.exception("%s: delivering a command to the model failed; the node keeps serving, "
                              "the model is out of sync", self.opts.name)
            self.model.events_lost(self.ring.delivering)  # one command, or a run's
            return 1

    def _model_work(self, backlog: bool = False) -> None:
        """One slice of a large hint, or else the pending scan.

        With a backlog in the ring the scan waits until DRAIN_POLL_S has
        passed since the last one: the STEPs still queued would supersede
        it, so a flood gets a scan per poll, as a decode loop does, rather
        than one per DRAIN_BATCH events."""
        model = self.model
        try:
            if model.busy():
                model.work(MODEL_SLICE_S)
            elif model.has_pending() and not (backlog and time.monotonic() - self._scanned < DRAIN_POLL_S):
                self._scanned = time.monotonic()
                model.run_pending()
        except Exception:  # a model bug must not take the node down
            log.exception("%s: device model failed; the node keeps serving", self.opts.name)

    def _catch_up(self) -> None:
        """Before a view of the model: every command taken before this
        moment, and the work they left, delivered (not every command that
        keeps coming under a flood)."""
        self._drain(None, finish=True)

    def model_view(self) -> ModelSnapshot | None:
        """The model's counters for the metrics: read on the daemon's own
        thread (the model is not thread-safe), after catching up; from the
        metrics server's thread, by a call into that thread, never through
        the daemon's own files."""
        from ..model import DeviceModel, views  # the daemon has them loaded already

        model = self.model
        if not isinstance(model, DeviceModel):
            return None

        def read() -> ModelSnapshot:
            self._catch_up()
            model.observe()
            return views.stats(model), views.tiers(model), views.dma_state(model)

        if self._trio_thread is None or threading.current_thread() is self._trio_thread:
            return read()
        token = self._trio_token
        if token is None:  # not serving (any more)
            return None
        try:  # the renderer waits meanwhile: if this thread is starved, the watcher raises it
            return trio.from_thread.run_sync(read, trio_token=token)
        except trio.RunFinishedError:  # stopping
            return None

    def _show_fastpath(self) -> str:
        self._drain(None)
        stats = {"transport": self.transport, "poll_us": self.opts.poll_us,
                 **(self.fast.stats() if self.fast is not None else {}), **self.ring.stats(),
                 **self.priority.stats(), "delivery_failures": self.delivery_failures,
                 **self._madvise_stats()}
        return "".join(f"{k}={v}\n" for k, v in stats.items())

    def _madvise_stats(self) -> dict[str, int]:
        """``kvcpu-dev run``'s programs: listeners open, the supervisor's counts."""
        sock = self.madvise_socket
        return {"madvise_runs": sock.accepted if sock else 0, "madvise_refused": sock.refused if sock else 0,
                "madvise_listeners": self.driver.madvise.listeners(),
                **{f"madvise_{k}": v for k, v in self.driver.madvise.stats().items()}}

    # -- teardown ------------------------------------------------------

    def close(self) -> None:
        """Unlink the node, release the device, unmount; safe to call twice."""
        if self.madvise_socket is not None:  # no program is handed over any more
            self.madvise_socket.close()
            self.madvise_socket = None
        self.bench.close()  # metrics server, the recording's last events
        if self._symlink is not None:
            with contextlib.suppress(FileNotFoundError):
                if self._symlink.is_symlink():
                    self._symlink.unlink()
            self._symlink = None
        if self.fast is not None:  # the device's mount sits on the attribute mount
            self.fast.close()
            self.fast = None
        self.priority.close()  # before the fd it watches goes
        if self.attr_session is not None:
            self.attr_session.close()
            self.attr_session = None
        if self.cuse_node is not None:
            self.cuse_node.remove()
        self.driver.close()
        # A mount that libfuse could not take down (busy) is detached lazily.
        mounts.detach_if_mounted(self.opts.attr_dir)
        with contextlib.suppress(OSError):
            self.opts.attr_dir.rmdir()


def _synced(attr: Attribute, sync: Callable[[], object]) -> Attribute:
    """The attribute, rendered after the ring is drained: a read after an
    ioctl sees what that ioctl did to the model."""
    show, pieces = attr.show, attr.pieces

    def synced_show() -> str:
        sync()
        return show()

    def synced_pieces() -> Pieces:
        sync()
        assert pieces is not None
        return pieces()

    return attr._replace(show=synced_show, pieces=synced_pieces if pieces is not None else None)


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
