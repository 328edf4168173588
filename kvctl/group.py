"""The commands beyond the reference tool's, as one click group.

Only the command that runs is imported: the group is click's documented
lazy group, so ``kvctl telemetry`` loads neither the recording code nor
rich, and ``kvctl stats`` loads none of the bench commands.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from kvcpu_dev.client import attr_dir, default_device
from kvcpu_dev.device import abi
from kvcpu_dev.device.regs import U32, WEIGHT_BITS

from . import device
from .errors import Failure, Usage
from .numbers import strtoull


class LazyGroup(click.Group):
    """A group whose subcommands are named ``"module.attribute"`` and
    imported when first asked for (click's "Lazily Loading Subcommands")."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self.lazy_subcommands[cmd_name].rpartition(".")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_subcommands[cmd_name]} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": []},
    lazy_subcommands={
        "stats": "kvctl.model_cmds.stats_cmd",
        "blocks": "kvctl.model_cmds.blocks_cmd",
        "record": "kvctl.bench_cmds.record_group",
        "log": "kvctl.bench_cmds.log_cmd",
        "replay": "kvctl.bench_cmds.replay_cmd",
        "fault": "kvctl.bench_cmds.fault_group",
        "reset": "kvctl.bench_cmds.reset_cmd",
        "unplug": "kvctl.bench_cmds.unplug_cmd",
        "replug": "kvctl.bench_cmds.replug_cmd",
        "top": "kvctl.bench_cmds.top_cmd",
    },
)
@click.option("--device", "device_path", metavar="PATH", default=None)
@click.pass_context
def cli(ctx: click.Context, device_path: str | None) -> None:
    """The commands beyond the reference tool's (see kvctl --help)."""
    path = device_path or default_device()
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
    result: dict[str, int] = {}
    device.call(ctx.obj["device"], "TELEMETRY", lambda d: result.update(d.telemetry()._asdict()))
    click.echo(json.dumps(result) if as_json else _table(result, ("last_va",)))


@cli.command()
@click.argument("settings", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def weights(ctx: click.Context, settings: tuple[str, ...], as_json: bool) -> None:
    """Show the weights, or set some of them by name (the rest are kept)."""
    changes = dict(_weight_setting(s) for s in settings)
    result: dict[str, int] = {}
    if changes:
        device.call(ctx.obj["device"], "SET_WEIGHTS",
                    lambda d: result.update(d.update_weights(**changes)._asdict()))
        for name, value in changes.items():
            note = _wider_than_register(name, value)
            if note:
                click.echo(note, err=True)
    else:
        device.call(ctx.obj["device"], "TELEMETRY", lambda d: result.update(d.weights()._asdict()))
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


def _problem(exc: click.UsageError) -> str:
    """click's message as one of kvctl's lines: "no such command 'bogus'",
    "fault add: missing argument 'CMD'"."""
    ctx = exc.ctx
    where = " ".join(ctx.command_path.split()[1:]) if ctx is not None else ""
    if ctx is not None and isinstance(ctx.command, click.Group) and "\n" in exc.format_message().strip():
        # a group without its subcommand: click's message is the group's whole help
        message = f"which one? {', '.join(ctx.command.list_commands(ctx))}"
    else:
        message = exc.format_message().strip().rstrip(".")
        message = message[:1].lower() + message[1:]
    return f"{where}: {message}" if where else message


def _wider_than_register(name: str, value: int) -> str | None:
    """The driver takes 32 bits and the device's register holds fewer: say
    so (the driver accepts it, so kvctl does), or None when it fits."""
    bits = WEIGHT_BITS[name]
    held = value & ((1 << bits) - 1)
    if held == value:
        return None
    return (f"kvctl: note: {name}={value} does not fit the device's {bits}-bit register, which holds {held} "
            f"({value} mod {1 << bits}); set anyway, as the driver accepts it (telemetry shows {value})")


def run(args: list[str]) -> None:
    """Run the group on ``args`` with kvctl's errors: a usage problem is
    ``Usage``, anything else click reports a one-line ``Failure``."""
    try:
        cli.main(args=args, prog_name="kvctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            sys.exit(exc.exit_code)
    except click.UsageError as exc:
        raise Usage(_problem(exc)) from None
    except click.ClickException as exc:
        raise Failure(f"kvctl: {exc.format_message()}") from None
    except click.Abort:
        sys.exit(1)
