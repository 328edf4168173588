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

import click

from kvcpu_dev import abi
from kvcpu_dev.attrs import U32_MAX
from kvcpu_dev.client import KvCpu, attr_dir, default_device

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
numbers: decimal, 0x hex or 0 octal; PATH defaults to $KVCPU_DEVICE or /dev/kvcpu0"""


class Failure(Exception):
    """A one-line error for stderr; exit status 1."""


class CNumber(click.ParamType):
    name = "number"

    def convert(self, value, param, ctx):  # noqa: ANN001
        if isinstance(value, int):
            return value
        try:
            return strtoull(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NUMBER = CNumber()


def _device(ctx: click.Context) -> KvCpu:
    path = ctx.obj["device"]
    try:
        return KvCpu(path)
    except OSError as exc:
        raise Failure(f"open {path}: {os.strerror(exc.errno)}") from None


def _command(ctx: click.Context, label: str, call) -> None:  # noqa: ANN001
    with _device(ctx) as dev:
        try:
            call(dev)
        except OSError as exc:
            raise Failure(f"ioctl {label}: {os.strerror(exc.errno)}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, add_help_option=True)
@click.option("--device", "device", metavar="PATH", default=None,
              help="The device node (default $KVCPU_DEVICE or /dev/kvcpu0).")
@click.pass_context
def cli(ctx: click.Context, device: str | None) -> None:
    """Talk to a KV-CPU device (the kernel driver or kvcpu-dev)."""
    path = device or default_device()
    ctx.obj = {"device": path, "attr_dir": attr_dir(path)}


@cli.command()
@click.argument("n", type=NUMBER)
@click.pass_context
def step(ctx: click.Context, n: int) -> None:
    """Advance the decode step."""
    _command(ctx, "STEP", lambda d: d.step(n))


def _block_command(name: str, label: str, method: str, doc: str) -> None:
    """hot, evict and share: the same two arguments, one client method."""

    @cli.command(name, help=doc)
    @click.argument("va", type=NUMBER)
    @click.argument("length", metavar="LEN", type=NUMBER)
    @click.pass_context
    def command(ctx: click.Context, va: int, length: int) -> None:
        _command(ctx, label, lambda d: getattr(d, method)(va, length))


_block_command("hot", "HOT", "mark_hot", "Mark a KV block hot.")
_block_command("evict", "EVICT", "evict", "Evict a KV block now.")
_block_command("share", "SHARE", "share_prefix", "Share a prefix block.")


@cli.command()
@click.argument("va", type=NUMBER)
@click.argument("length", metavar="LEN", type=NUMBER)
@click.argument("target", metavar="STEP", type=NUMBER)
@click.pass_context
def prefetch(ctx: click.Context, va: int, length: int, target: int) -> None:
    """Prefetch a KV block for a decode step."""
    _command(ctx, "PREFETCH", lambda d: d.prefetch(va, length, target))


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
    if number > U32_MAX:
        raise Failure(f"kvctl: {name} is a 32-bit field: {value!r}")
    return name, number


def _register_model_commands() -> None:
    try:
        from . import model_cmds
    except ImportError:  # the device model's commands are optional
        return
    model_cmds.register(cli)


_register_model_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="kvctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError:  # as the reference tool: the usage, nothing else
        click.echo(USAGE, err=True)
        sys.exit(1)
    except (Failure, click.ClickException) as exc:
        click.echo(str(exc) if isinstance(exc, Failure) else f"kvctl: {exc.format_message()}", err=True)
        sys.exit(1)
    except click.Abort:
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
