"""``kvcpu-dev``: start, run and stop an emulated KV-CPU device.

Like ``insmod kv_cpu.ko mock=1``, the command returns once the node answers
ioctls: the work happens in a forked child, which reports through a pipe
when the node is published (or why it could not be), and the parent then
checks the node with a real GET_TELEMETRY before it exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import grp
import logging
import os
import pathlib
import select
import signal
import socket
import sys
import time

import click
import trio

from . import __version__, abi, mounts
from .server import Options, Server, node_kind

log = logging.getLogger("kvcpu_dev")

PCI_ID = ("0x1de5", "0x0a10")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class StartError(Exception):
    """A reason not to start, said in one line."""


# -- paths and the lock held for a device's lifetime ------------------------


def pid_file(opts: Options) -> pathlib.Path:
    return opts.run_dir / f"{opts.name}.pid"


def lock_file(opts: Options) -> pathlib.Path:
    return opts.run_dir / f"{opts.name}.lock"


def default_log_path(opts: Options) -> pathlib.Path:
    return opts.run_dir / f"{opts.name}.log"


def read_pid(opts: Options) -> int | None:
    try:
        pid = int(pid_file(opts).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive all the same
        pass
    return True


def take_lock(opts: Options) -> int:
    """An flock on <run_dir>/<name>.lock: one daemon per name, released by
    the kernel however the daemon dies."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(opts), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_pid(opts)
        who = f" (pid {pid})" if pid else ""
        raise StartError(f"{opts.name} is already running{who}; stop it with: kvcpu-dev --stop --name {opts.name}")
    return fd


@contextlib.contextmanager
def lock_if_free(opts: Options):  # noqa: ANN201
    """Hold the name's lock if no daemon does; yields whether we got it.
    The lock, not the pid file, says whether a daemon runs: a pid file
    outlives a killed daemon and its pid may belong to anyone by now."""
    try:
        fd = os.open(lock_file(opts), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    except OSError as exc:
        raise StartError(f"cannot open {lock_file(opts)}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # drops the lock if we held it


def remove_leftovers(opts: Options) -> list[str]:
    """Undo what a killed daemon left: its mount, its link, its pid file.
    Call with the name's lock held.  Returns what was removed."""
    removed = []
    if mounts.detach_if_mounted(opts.attr_dir):
        removed.append(f"a stale mount at {opts.attr_dir}")
    with contextlib.suppress(FileNotFoundError):
        pid_file(opts).unlink()
        removed.append("a stale pid file")
    node = opts.node
    if node_kind(node) == "symlink" and _is_our_link(opts, node):
        node.unlink()
        removed.append(f"a stale link {node}")
    return removed


def _is_our_link(opts: Options, node: pathlib.Path) -> bool:
    target = pathlib.Path(os.readlink(node))
    return target in (opts.device_file, opts.cuse_node)


def clean_stale(opts: Options, transport: str) -> None:
    """Remove our leftovers; anything else standing at the node's path is
    not ours: refuse."""
    for what in remove_leftovers(opts):
        log.info("%s: removed %s", opts.name, what)
    node = opts.node
    kind = node_kind(node)
    if kind == "symlink":
        raise StartError(f"{node} exists and is not ours (a link to {os.readlink(node)}); remove it first")
    if kind == "chardev" and transport == "fuse":
        raise StartError(f"{node} is already a character device (the kv_cpu driver, or a CUSE kvcpu-dev?)")
    if kind == "other":
        raise StartError(f"{node} exists and is not a device node; remove it first")
    cuse_node = opts.cuse_node
    if transport == "cuse" and node_kind(cuse_node) != "missing":
        if answers(cuse_node):
            raise StartError(f"{cuse_node} already exists and answers ioctls")
        raise StartError(f"{cuse_node} already exists; remove it first")


def answers(node: pathlib.Path) -> bool:
    """Whether the node takes a GET_TELEMETRY, as a client would send it."""
    try:
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, abi.KV_CPU_GET_TELEMETRY, bytearray(abi.TELEMETRY_INFO.size))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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


# -- systemd readiness -------------------------------------------------------


def sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


# -- the daemon proper -------------------------------------------------------


def serve(opts: Options, report=lambda ok, msg: None) -> int:
    """Run the device in this process until signalled.  ``report(ok, msg)``
    is called once: when the node is published, or with why it was not."""
    transport = opts.resolved_transport()
    if transport == "cuse" and not opts.cuse_path.exists():
        raise StartError(f"{opts.cuse_path} does not exist (no CUSE in this kernel); use --transport fuse")
    lock = take_lock(opts)
    try:
        clean_stale(opts, transport)
        server = Server(opts)
        try:
            try:
                server.open()
            except OSError as exc:
                raise StartError(f"cannot create {opts.name}: {exc.strerror or exc}") from None

            def ready() -> None:
                pid_file(opts).write_text(f"{os.getpid()}\n")
                log.info("%s (pid %d)", server.describe(), os.getpid())
                sd_notify(f"READY=1\nMAINPID={os.getpid()}")
                report(True, server.describe())

            try:
                trio.run(server.run, ready)
            except BaseException as exc:  # trio may wrap it in a group
                cause = _os_error_in(exc)
                if cause is None:
                    raise
                raise StartError(f"{opts.name}: {cause.strerror or cause}") from None
        finally:
            sd_notify("STOPPING=1")
            server.close()
            with contextlib.suppress(FileNotFoundError):
                pid_file(opts).unlink()
        served = server.device.telemetry()
        log.info("%s stopped (%d steps, %d register writes)", opts.name, served["step_count"], server.device.bar0.seq)
        return 0
    finally:
        os.close(lock)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``, looking inside exception groups."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _os_error_in(inner)) is not None:
                return found
    return None


def start_background(opts: Options, log_path: pathlib.Path) -> int:
    """Fork; the child becomes the daemon; return once the node answers.
    A child that neither reports nor answers in time is stopped, so a
    failed start never leaves a daemon behind."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartError(f"cannot open the log {log_path}: {exc.strerror}") from None
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon: never return into the parent's code
        code = 1
        try:
            os.close(rfd)
            os.setsid()
            _detach_stdio(log_fd)
            code = _child(opts, wfd)
        finally:
            os._exit(code)
    os.close(wfd)
    os.close(log_fd)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        message = _read_report(rfd, deadline)
        if not message.startswith("OK "):
            os.waitpid(pid, 0)
            raise StartError(message.removeprefix("ERR ") or f"the daemon exited during start-up; see {log_path}")
        while not answers(opts.node):
            if time.monotonic() > deadline:
                raise StartError(f"{opts.node} does not answer ioctls; see {log_path}")
            time.sleep(0.005)
    except StartError:
        _reap(pid)
        raise
    click.echo(f"kvcpu-dev: {message[3:]} (pid {pid})")
    return 0


def _read_report(rfd: int, deadline: float) -> str:
    """The child's one report (it closes the pipe after it, or dies)."""
    chunks = []
    with os.fdopen(rfd, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                raise StartError(f"no word from the daemon within {READY_TIMEOUT:.0f} s")
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                return b"".join(chunks).decode(errors="replace").strip()
            chunks.append(chunk)


def _reap(pid: int) -> None:
    """Stop a child that failed to start (it cleans up on SIGTERM)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ChildProcessError):
        for _ in range(int(STOP_TIMEOUT / 0.01)):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _child(opts: Options, wfd: int) -> int:
    def report(ok: bool, msg: str) -> None:
        nonlocal wfd
        if wfd >= 0:
            os.write(wfd, f"{'OK' if ok else 'ERR'} {msg}".encode())
            os.close(wfd)
            wfd = -1

    try:
        return serve(opts, report)
    except StartError as exc:
        report(False, str(exc))
        log.error("%s", exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent must hear why
        log.exception("kvcpu-dev failed")
        report(False, f"internal error: {exc}")
        return 1


def _detach_stdio(log_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr to the log."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)


def stop(opts: Options) -> int:
    with lock_if_free(opts) as free:
        if free:  # nobody runs: tidy what a crash left, and say so
            removed = remove_leftovers(opts)
            note = f" (removed {', '.join(removed)})" if removed else ""
            raise StartError(f"{opts.name} is not running{note}")
    pid = read_pid(opts)
    if pid is None:
        raise StartError(f"{opts.name} is starting (no pid file yet); try again")
    with contextlib.suppress(ProcessLookupError):  # it may be on its way out
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        with lock_if_free(opts) as free:
            if free:
                break
        if time.monotonic() > deadline:
            raise StartError(f"{opts.name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
        time.sleep(0.01)
    click.echo(f"kvcpu-dev: {opts.name} stopped (pid {pid})")
    return 0


# -- command line ------------------------------------------------------------


def _octal(ctx, param, value: str) -> int:  # noqa: ANN001
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is out of range (000..777)")
    return mode


def _group(ctx, param, value: str | None) -> int:  # noqa: ANN001
    if value is None:
        return 0
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group named {value!r}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--mock", is_flag=True, help="Emulate the device (there is no hardware).")
@click.option("--name", default="kvcpu0", show_default=True, help="Device name: /dev/NAME.")
@click.option("--transport", type=click.Choice(["auto", "cuse", "fuse"]), default="auto",
              show_default=True, help="auto: CUSE when /dev/cuse exists, else a FUSE file.")
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground (containers, systemd).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the running daemon for --name.")
@click.option("--mode", default="0600", show_default=True, callback=_octal, help="Node permissions (octal).")
@click.option("--group", default=None, callback=_group, help="Node group (name or gid).")
@click.option("--run-dir", type=click.Path(path_type=pathlib.Path), default="/run/kvcpu",
              show_default=True, help="Mounts, pid and log files.")
@click.option("--dev-dir", type=click.Path(path_type=pathlib.Path), default="/dev",
              show_default=True, help="Where the node (or its link) appears.")
@click.option("--trace", is_flag=True, help="Log every command and register write.")
@click.option("--log-file", type=click.Path(path_type=pathlib.Path), default=None,
              help="Background log (default RUN_DIR/NAME.log).")
@click.option("--config", type=click.Path(path_type=pathlib.Path, dir_okay=False), default=None,
              help="Device model parameters (TOML; see docs/device-model.md).")
@click.option("--clock", type=click.Choice(["wall", "sim"]), default=None,
              help="Model time: wall clock (the daemon's default), or a fixed period per step.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override one model parameter, e.g. --set entries=4096 --set t1_capacity=64GB.")
@click.option("--no-model", is_flag=True, help="Registers only, as the reference driver's mock.")
@click.option("--poll-us", type=click.IntRange(0, 100_000), default=0, show_default=True,
              help="After each reply, spin up to this many microseconds for the next request "
                   "before blocking (a burst is served without wake-ups; costs CPU).")
@click.version_option(__version__, prog_name="kvcpu-dev")
def main(mock, name, transport, foreground, stop_, mode, group, run_dir, dev_dir, trace, log_file,  # noqa: ANN001
         config, clock, settings, no_model, poll_us):
    """A userspace KV-CPU device: /dev/kvcpu0 without the kernel driver."""
    opts = Options(name=name, transport=transport, run_dir=run_dir.absolute(),
                   dev_dir=dev_dir.absolute(), mode=mode, gid=group, trace=trace,
                   poll_us=poll_us)
    _setup_logging(trace)
    try:
        if "/" in name or name in ("", ".", ".."):
            raise StartError(f"invalid device name {name!r}")
        if stop_:
            sys.exit(stop(opts))
        if not mock:
            found = find_hardware()
            if found:
                raise StartError(f"KV-CPU hardware found at {found}, but kvcpu-dev only emulates it; "
                                 "load the kv_cpu driver, or use --mock")
            raise StartError("no KV-CPU device (PCI 1de5:0a10) found; use --mock to emulate one")
        if os.geteuid() != 0:
            raise StartError("must run as root (it mounts FUSE or creates a CUSE device)")
        if not no_model:
            opts.model = build_model(config, clock, settings)
        if foreground:
            sys.exit(serve(opts))
        sys.exit(start_background(opts, log_file or default_log_path(opts)))
    except StartError as exc:
        click.echo(f"kvcpu-dev: {exc}", err=True)
        sys.exit(1)


def build_model(config: pathlib.Path | None, clock: str | None, settings: tuple[str, ...]):  # noqa: ANN201
    """The device model from --config, then --set, then --clock; a live
    daemon runs on the wall clock unless told otherwise."""
    import tomllib

    from .model import DeviceModel, ModelConfig  # numpy: only when modelling

    overrides: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StartError(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    try:
        data = tomllib.loads(config.read_text()) if config else {}
        data.setdefault("clock", "wall")
        base = ModelConfig.from_dict(data, str(config or "defaults"))
        if clock is not None:
            overrides["clock"] = clock
        return DeviceModel(base.replace(**overrides))
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise StartError(f"model configuration: {exc}") from None


def _setup_logging(trace: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("kvcpu-dev[%(process)d]: %(message)s"))
    root = logging.getLogger("kvcpu_dev")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    # Per-command lines (the core's and the model's) only with --trace.
    for chatty in ("kvcpu_dev.trace", "kvcpu_dev.model"):
        logging.getLogger(chatty).setLevel(logging.INFO if trace else logging.WARNING)
