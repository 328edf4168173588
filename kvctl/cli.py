"""The ``kvctl`` command line.

The five reference commands behave exactly as the reference tool: numbers
parsed like C ``strtoull(s, &end, 0)``; a usage problem prints the usage
and exits 1; a failed open prints ``open PATH: <strerror>`` and a failed
ioctl ``ioctl STEP: <strerror>``, each exiting 1; success prints nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import click

from kvcpu_dev import abi
from kvcpu_dev.client import KvCpu, attr_dir, default_device
from kvcpu_dev.regs import U32

from .errors import Failure
from .numbers import strtoull

USAGE = """\
usage: kvctl [--device PATH] <command> [args]
  step <n>                    advance the decode step
  hot <va> <len>              mark a KV block hot
  evict <va> <len>            evict a KV block now
  prefetch <va> <len> <step>  prefetch a block for a step
  share <va> <len>            share a prefix block
  telemetry [--json]          show the device's telemetry
  weights [name=value ...]    show or set HEPC weights and thresholds
  stats [--json]              device model counters
  blocks [--tier T] [--json]  device model block directory
  record start FILE | stop    record every command the device gets
  log FILE [--json]           print a recording, decoded
  replay FILE [--speed max|X] [--check] [--model [--config F]]
                              re-issue a recording (or run it through the model)
  fault add CMD --errno E [--count N|--every N|--probability P --seed S] [--latency 5ms]
  fault list | clear | del ID injected faults
  reset | unplug | replug     function-level reset; surprise removal and return
  top [--once|--count N]      live view: rates, latencies, tiers, DMA, faults
numbers: decimal, 0x hex or 0 octal; PATH defaults to $KVCPU_DEVICE or /dev/kvcpu0"""


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno is not None else str(exc)


def _on_device(path: str, label: str, call: Callable[[KvCpu], object]) -> None:
    """Open the node and make one call, with the reference tool's messages."""
    try:
        dev = KvCpu(path)
    except OSError as exc:
        raise Failure(f"open {path}: {_strerror(exc)}") from None
    with dev:
        try:
            call(dev)
        except OSError as exc:
            raise Failure(f"ioctl {label}: {_strerror(exc)}") from None


def _command(ctx: click.Context, label: str, call: Callable[[KvCpu], object]) -> None:
    _on_device(ctx.obj["device"], label, call)


class _Group(click.Group):
    """kvctl's group: the model's commands (numpy) are imported only when
    one of them runs; the rest of kvctl stays light."""

    LAZY = ("stats", "blocks")

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            from . import model_cmds

            model_cmds.register(self)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.LAZY})


@click.group(cls=_Group, context_settings={"help_option_names": []})
@click.option("--device", "device", metavar="PATH", default=None)
@click.pass_context
def cli(ctx: click.Context, device: str | None) -> None:
    """The commands beyond the reference tool's (see USAGE)."""
    path = device or default_device()
    ctx.obj = {"device": path, "attr_dir": attr_dir(path)}


def _table(rows: dict[str, int], hex_fields: tuple[str, ...] = ()) -> str:
    width = max(map(len, rows))
    return "\n".join(
        f"{k:<{width}}  {v:#x}" if k in hex_fields else f"{k:<{width}}  {v}"
        for k, v in rows.items()
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def telemetry(ctx: click.Context, as_json: bool) -> None:
    """Show the device's telemetry."""
    result = {}
    _command(ctx, "TELEMETRY", lambda d: result.update(d.telemetry()._asdict()))
    click.echo(json.dumps(result) if as_json else _table(result, ("last_va",)))


@cli.command()
@click.argument("settings", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def weights(ctx: click.Context, settings: tuple[str, ...], as_json: bool) -> None:
    """Show the weights, or set some of them by name (the rest are kept)."""
    changes = dict(_weight_setting(s) for s in settings)
    result = {}
    if changes:
        _command(ctx, "SET_WEIGHTS", lambda d: result.update(d.update_weights(**changes)._asdict()))
    else:
        _command(ctx, "TELEMETRY", lambda d: result.update(d.weights()._asdict()))
    click.echo(json.dumps(result) if as_json else _table(result))


def _weight_setting(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or name not in abi.WEIGHT_FIELDS:
        raise Failure(f"kvctl: expected NAME=VALUE, NAME one of {', '.join(abi.WEIGHT_FIELDS)}: {text!r}")
    try:
        number = strtoull(value)
    except ValueError as exc:
        raise Failure(f"kvctl: {name}: {exc}") from None
    if number > U32:
        raise Failure(f"kvctl: {name} is a 32-bit field: {value!r}")
    return name, number


#: The reference tool's commands: label in its messages, client method,
#: and how many numbers each takes.
REFERENCE = {
    "step": ("STEP", "step", 1),
    "hot": ("HOT", "mark_hot", 2),
    "evict": ("EVICT", "evict", 2),
    "prefetch": ("PREFETCH", "prefetch", 3),
    "share": ("SHARE", "share_prefix", 2),
}


class Usage(Exception):
    """Print the usage and exit 1, as the reference tool does."""


def _split_device(args: list[str]) -> tuple[str | None, list[str]]:
    """A leading ``--device PATH`` (or ``--device=PATH``), then the rest."""
    if args[:1] == ["--device"]:
        if len(args) < 2:
            raise Usage()
        return args[1], args[2:]
    if args and args[0].startswith("--device="):
        return args[0].split("=", 1)[1], args[1:]
    return None, args


def run_reference(device: str | None, command: str, words: list[str]) -> None:
    """One of the five reference commands, parsed as the reference parses
    them: the exact argument count, each a whole ``strtoull(s, &end, 0)``
    number (so ``-1`` is 2**64-1, and ``--`` or ``--help`` are not numbers)."""
    label, method, count = REFERENCE[command]
    if len(words) != count:
        raise Usage()
    try:
        numbers = [strtoull(w) for w in words]
    except ValueError:
        raise Usage() from None
    _on_device(device or default_device(), label, lambda d: getattr(d, method)(*numbers))


def _run_extras(args: list[str]) -> None:
    from . import bench_cmds  # stats and blocks (numpy) are loaded by _Group when used

    bench_cmds.register(cli)
    try:
        cli.main(args=args, prog_name="kvctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            sys.exit(exc.exit_code)
    except click.UsageError:
        raise Usage() from None
    except click.ClickException as exc:
        raise Failure(f"kvctl: {exc.format_message()}") from None
    except click.Abort:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args in (["-h"], ["--help"]):
            click.echo(USAGE)
            sys.exit(0)
        device, rest = _split_device(args)
        if rest and rest[0] in REFERENCE:
            run_reference(device, rest[0], rest[1:])
        else:
            _run_extras(args)
    except Usage:
        click.echo(USAGE, err=True)
        sys.exit(1)
    except Failure as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
