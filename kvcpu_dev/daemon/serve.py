"""``kvcpu-dev``: one device's life, in order.

  build the device model (numpy: here, not in the command that forked us)
  lock the name          (lock.py: RUN_DIR checked, RUN_DIR/N.lock 0600)
  clean what a killed predecessor left, and only what is provably its own
  fork the privileged helper      (helper: with --runas, --seccomp or
                                    --request-timeout)
  mount, open /dev/cuse, publish the node          (server; needs root)
  write the pid file (and, with --cdi, the CDI spec), then drop root and
  install the seccomp filter
  serve until SIGTERM/SIGINT/SIGHUP
  teardown: the helper undoes the root-only steps, the server the rest

The command line is in cli.py, the background start in background.py.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pathlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import client
from ..errors import StartError
from . import cdi
from .cleanup import prepare_attr_dir, remove_attr_dir, remove_leftovers
from .helper import Helper, SharedPage
from .lock import take_lock
from .options import Options, is_device_file
from .rundir import RunDir, check_dev_dir
from .server import Server, node_kind

if TYPE_CHECKING:
    from ..model import DeviceModel

#: ``report(ok, message)``: how serve() tells a waiting parent the outcome.
Report = Callable[[bool, str], None]

log = logging.getLogger("kvcpu_dev")

PCI_ID = ("0x1de5", "0x0a10")

__all__ = ["Options", "StartError", "serve"]


def clean_stale(opts: Options, transport: str, run_dir: RunDir) -> None:
    """Remove our leftovers; anything else standing at the node's path is
    not ours: refuse."""
    for what in remove_leftovers(opts, run_dir):
        log.info("%s: removed %s", opts.name, what)
    node = opts.node
    kind = node_kind(node)
    if kind == "symlink":
        raise StartError(f"{node} exists and is not ours (a link to {os.readlink(node)}); remove it first")
    if kind == "chardev" and is_device_file(transport):
        raise StartError(f"{node} is already a character device (the kv_cpu driver, or a CUSE kvcpu-dev?)")
    if kind == "other":
        raise StartError(f"{node} exists and is not a device node; remove it first")
    cuse_node = opts.cuse_node
    if transport == "cuse" and node_kind(cuse_node) != "missing":
        if client.answers(cuse_node):
            raise StartError(f"{cuse_node} already exists and answers ioctls")
        raise StartError(f"{cuse_node} already exists; remove it first")


def find_hardware() -> str | None:
    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        try:
            ids = (pathlib.Path(dev, "vendor").read_text().strip(),
                   pathlib.Path(dev, "device").read_text().strip())
        except OSError:
            continue
        if ids == PCI_ID:
            return os.path.basename(dev)
    return None


def sd_notify(message: str) -> None:
    """systemd readiness (Type=notify), when NOTIFY_SOCKET is set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


def needs_helper(opts: Options) -> bool:
    return bool(opts.runas or opts.seccomp or opts.request_timeout)


def _preload() -> None:
    """What the daemon may import after it dropped root: the new user may
    not be able to read the interpreter's library (a Python under /root)."""
    import encodings.idna  # noqa: F401
    import linecache  # noqa: F401
    import tokenize  # noqa: F401
    import traceback  # noqa: F401

    traceback.format_exc()


def _give_up_root(opts: Options, transport: str) -> str:
    """--runas and --seccomp; returns how the daemon now runs."""
    from . import privileges

    notes = []
    if opts.runas:
        who = privileges.resolve_user(opts.runas)
        _preload()
        lost = privileges.keep_scheduling()
        privileges.drop_to(who)
        notes.append(f"as {who.user} (uid {who.uid}, gid {who.gid})")
        if lost:
            notes.append(lost)
    if opts.seccomp:
        privileges.install_seccomp(uring=transport == "uring")
        notes.append("seccomp filter on")
    return ", ".join(notes)


def serve(opts: Options, report: Report = lambda ok, msg: None) -> int:
    """Run the device in this process until signalled.  ``report(ok, msg)``
    is called once: when the node is published, or with why it was not."""
    model = opts.make_model() if opts.make_model is not None else None
    transport = opts.resolved_transport()
    if transport == "cuse" and not opts.cuse_path.exists():
        raise StartError(f"{opts.cuse_path} does not exist (no CUSE in this kernel); use --transport fuse")
    run_dir = RunDir.open(opts.run_dir, create=True)
    assert run_dir is not None
    with run_dir:
        check_dev_dir(opts)
        lock = take_lock(opts, run_dir)
        try:
            return _serve_locked(opts, model, transport, run_dir, lock, report)
        finally:
            os.close(lock)


def _serve_locked(opts: Options, model: DeviceModel | None, transport: str, run_dir: RunDir, lock: int,
                  report: Report) -> int:
    clean_stale(opts, transport, run_dir)
    cdi.check(opts)
    made_dir = prepare_attr_dir(opts, run_dir)
    shared = SharedPage()
    helper = None
    try:
        helper = Helper.start(opts, transport, keep=(lock, run_dir.fd), shared=shared) if needs_helper(opts) else None
        server = Server(opts, model)  # refusals of --record or --metrics come from here
    except BaseException:
        if helper is not None:
            helper.teardown()
            helper.close()
        if made_dir:
            remove_attr_dir(opts, run_dir)
        raise
    server.driver.share(shared.page)
    try:
        try:
            server.open()
        except OSError as exc:
            raise StartError(f"cannot create {opts.name}: {exc.strerror or exc}") from None

        def ready() -> None:
            pid = os.getpid()
            run_dir.write_pid(opts.pid_name, pid)
            what = server.describe() + server.bench.describe()
            if opts.cdi_dir is not None:  # before READY=1: a container may be started on it at once
                spec = cdi.write(opts, server.transport)
                what += f"; CDI {cdi.qualified_name(opts.name)} in {spec}"
            sd_notify(f"READY=1\nMAINPID={pid}")
            if helper is not None:
                made = getattr(server.cuse_node, "made", None)  # a CUSE node made by hand
                helper.ready(pid=pid, made_node=str(made) if made else None,
                             rdev=os.stat(made).st_rdev if made else 0)
            how = _give_up_root(opts, transport)
            log.info("%s (pid %d)%s", what, pid, f" {how}" if how else "")
            if server.readers_unraised:  # after the ready line, which a foreground's reader waits for first
                log.warning("%s: %s: a reader may wait out a flood of commands (docs/containers.md)",
                            opts.name, server.readers_unraised)
            report(True, what)

        try:
            trio.run(server.run, ready)
        except BaseException as exc:  # trio may wrap it in a group
            cause = _error_in(exc)
            if cause is None:
                raise
            if isinstance(cause, OSError):
                raise StartError(f"{opts.name}: {cause.strerror or cause}") from None
            raise StartError(str(cause)) from None
    finally:
        sd_notify("STOPPING=1")
        if server.fast is not None:
            server.fast.release_held()  # before the helper aborts the connection
        if helper is not None:
            helper.teardown()  # the root-only steps, before the server's own
        server.close()
        if helper is None:
            cdi.remove(opts)  # with a helper, its teardown did (the daemon may be root no more)
            run_dir.remove_pid(opts.pid_name, os.getpid())
        else:
            helper.close()  # its end of the pair sees EOF when we exit
    served = server.driver.telemetry()
    log.info("%s stopped (%d steps, %d register writes)", opts.name, served["step_count"], server.ring.bar0.seq)
    return 0


def _error_in(exc: BaseException) -> BaseException | None:
    """The OSError or one-line error behind ``exc``, inside exception groups."""
    from .privileges import PrivilegeError

    if isinstance(exc, (OSError, StartError, PrivilegeError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _error_in(inner)) is not None:
                return found
    return None
