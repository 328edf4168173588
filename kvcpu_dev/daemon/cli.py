"""The ``kvcpu-dev`` command line: options, checks, and dispatch to a
foreground daemon, a background start, or ``--stop``."""

from __future__ import annotations

import functools
import grp
import logging
import math
import os
import pathlib
import sys
from typing import TYPE_CHECKING

import click

from .. import __version__, paths
from ..errors import StartError
from .cdi import check_name, qualified_name
from .options import Options
from .stop import stop

if TYPE_CHECKING:
    from ..model import DeviceModel

log = logging.getLogger("kvcpu_dev")

#: --request-timeout bounds (seconds).  Below the floor a legitimately
#: slow request (a full ``blocks`` render: ~0.3 s) could be taken for a hang.
REQUEST_TIMEOUT_RANGE = (0.5, 3600.0)


def _octal(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is out of range (000..777)")
    return mode


def _group(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    if value is None:
        return 0
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group named {value!r}") from None


def _timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of seconds") from None
    low, high = REQUEST_TIMEOUT_RANGE
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise click.BadParameter(f"{value!r} is out of range ({low:g}..{high:g} s)")
    return seconds


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="kvcpu-dev run [--name N | --device PATH] -- CMD [ARGS...] runs CMD so that its "
                      "madvise(MADV_KV_HOT/EVICT/PREFETCH) calls reach the device on a stock kernel "
                      "(kvcpu-dev run --help).")
@click.option("--mock", is_flag=True, help="Emulate the device (there is no hardware).")
@click.option("--name", default="kvcpu0", show_default=True, help="Device name: /dev/NAME.")
@click.option("--transport", type=click.Choice(["auto", "cuse", "fuse", "uring"]), default="auto",
              show_default=True,
              help="cuse: a character device; fuse: a FUSE-mounted file over /dev/fuse; uring: the file "
                   "over FUSE io_uring, a queue per CPU (switches on the fuse module's enable_uring for "
                   "its mount). auto: CUSE when /dev/cuse exists, else uring if enable_uring is already "
                   "on, else fuse.")
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground (containers, systemd).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the running daemon for --name.")
@click.option("--mode", default="0600", show_default=True, callback=_octal, help="Node permissions (octal).")
@click.option("--group", default=None, callback=_group, help="Node group (name or gid).")
@click.option("--control-group", is_flag=True,
              help="Let the node's group use the bench's controls (record, faults, reset, unplug); "
                   "default: root only. A recording started by a member is opened with the member's rights.")
@click.option("--run-dir", type=click.Path(path_type=pathlib.Path), default=str(paths.DEFAULT_RUN_DIR),
              show_default=True, help="Mounts, pid, lock and log files (root's, not writable by others).")
@click.option("--dev-dir", type=click.Path(path_type=pathlib.Path), default=str(paths.DEFAULT_DEV_DIR),
              show_default=True, help="Where the node (or its link) appears.")
@click.option("--trace", is_flag=True, help="Log every command and register write.")
@click.option("--log-file", type=click.Path(path_type=pathlib.Path), default=None,
              help="Background log (default RUN_DIR/NAME.log).")
@click.option("--runas", metavar="USER", default=None,
              help="Once the node is published, drop root for USER (and its groups).")
@click.option("--seccomp", is_flag=True, help="Deny system calls a running device never needs.")
@click.option("--request-timeout", metavar="S", default=None, callback=_timeout,
              help="Abort the node's connection when requests wait S seconds on a frozen daemon.")
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
@click.option("--lossy", is_flag=True,
              help="When the event ring is full, drop events (counted; the model and a recording then "
                   "miss them) instead of making the request wait for room.")
@click.option("--record", "record", type=click.Path(path_type=pathlib.Path, dir_okay=False), default=None,
              help="Record every command to FILE (created 0600, or appended to if it is a recording).")
@click.option("--metrics", "metrics", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--cdi", is_flag=True,
              help=f"Write a CDI spec naming the node {qualified_name('NAME')} (podman, Docker 25+, containerd, "
                   f"CRI-O, Kubernetes) to {paths.DEFAULT_CDI_DIR}; removed on stop.")
@click.option("--cdi-dir", type=click.Path(path_type=pathlib.Path, file_okay=False), default=None,
              help="Where --cdi writes the spec (implies --cdi).")
@click.version_option(__version__, prog_name="kvcpu-dev")
def main(mock: bool, name: str, transport: str, foreground: bool, stop_: bool, mode: int, group: int,
         control_group: bool, run_dir: pathlib.Path, dev_dir: pathlib.Path, trace: bool, log_file: pathlib.Path | None,
         runas: str | None, seccomp: bool, request_timeout: float | None, config: pathlib.Path | None,
         clock: str | None, settings: tuple[str, ...], no_model: bool, poll_us: int,
         lossy: bool, record: pathlib.Path | None, metrics: str | None, cdi: bool,
         cdi_dir: pathlib.Path | None) -> None:
    """A userspace KV-CPU device: /dev/kvcpu0 without the kernel driver."""
    opts = Options(name=name, transport=transport, run_dir=run_dir.absolute(),
                   dev_dir=dev_dir.absolute(), mode=mode, gid=group, control_group=control_group, trace=trace, poll_us=poll_us, runas=runas,
                   seccomp=seccomp, request_timeout=request_timeout,
                   log_path=log_file.absolute() if log_file else None,
                   lossy=lossy, record=record.absolute() if record else None, metrics=metrics,
                   cdi_dir=(cdi_dir or paths.DEFAULT_CDI_DIR).absolute() if cdi or cdi_dir else None)
    _setup_logging(trace)
    from .privileges import PrivilegeError, resolve_user

    try:
        if "/" in name or name in ("", ".", ".."):
            raise StartError(f"invalid device name {name!r}")
        if opts.cdi_dir is not None:
            check_name(name)
        if stop_:
            click.echo(stop(opts))
            sys.exit(0)
        if not mock:
            from .serve import find_hardware

            found = find_hardware()
            if found:
                raise StartError(f"KV-CPU hardware found at {found}, but kvcpu-dev only emulates it; "
                                 "load the kv_cpu driver, or use --mock")
            raise StartError("no KV-CPU device (PCI 1de5:0a10) found; use --mock to emulate one")
        if os.geteuid() != 0:
            raise StartError("must run as root (it mounts FUSE or creates a CUSE device)")
        if runas:
            resolve_user(runas)  # a bad name is refused before anything starts
        if not no_model:  # built by the daemon, after the fork: see build_model
            opts.make_model = functools.partial(build_model, config, clock, _overrides(settings))
        if foreground:
            from .serve import serve

            sys.exit(serve(opts))
        from .background import start_background

        sys.exit(start_background(opts))
    except (StartError, PrivilegeError) as exc:
        click.echo(f"kvcpu-dev: {exc}", err=True)
        sys.exit(1)


def _overrides(settings: tuple[str, ...]) -> dict[str, str]:
    """--set KEY=VALUE, each as written (the model's config checks values)."""
    overrides: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StartError(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def build_model(config: pathlib.Path | None, clock: str | None, overrides: dict[str, str]) -> DeviceModel:
    """The device model from --config, then --set, then --clock; a live
    daemon runs on the wall clock unless told otherwise.  Every bad value
    is one line naming its key (model/config.py).

    Called in the daemon's own process (serve()), not by the command that
    starts it: numpy and the model are a third of the start-up's imports,
    and a command that loads them only to exit pays for them twice."""
    from ..model import DeviceModel, ModelConfig  # numpy: only when modelling

    try:
        daemon_defaults = {"clock": "wall"}
        base = (ModelConfig.from_toml(config, daemon_defaults) if config
                else ModelConfig.from_dict(daemon_defaults, "defaults"))
        if clock is not None:
            overrides = {**overrides, "clock": clock}
        return DeviceModel(base.replace(**overrides))
    except (OSError, UnicodeDecodeError) as exc:
        raise StartError(f"model configuration: {config}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:  # TOMLDecodeError is a ValueError
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
