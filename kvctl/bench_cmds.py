"""kvctl's bench commands: record, log, replay, fault, reset, unplug,
replug, top.

Thin: they write the daemon's attribute files (``record``, ``faults``,
``control``) or read a recording.  No numpy and no device model here; only
``replay --model`` imports the model, lazily.  Errors print one line on
stderr and exit 1 (``Failure``).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import sys
from typing import TYPE_CHECKING

import click

from kvcpu_dev.bench import faults as fault_rules
from kvcpu_dev.client import attr_dir as find_attr_dir

from .device import attr_hint
from .errors import Failure

if TYPE_CHECKING:
    from kvcpu_dev.bench.kvrec import Reader


def _attr_dir(ctx: click.Context) -> pathlib.Path:
    return pathlib.Path(ctx.obj["attr_dir"])


def _write(ctx: click.Context, name: str, text: str) -> None:
    path = _attr_dir(ctx) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Failure(f"kvctl: open {path}: {exc.strerror}{attr_hint(ctx.obj['device'], path, exc.errno)}") from None
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise Failure(f"kvctl: {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read(ctx: click.Context, name: str) -> str:
    path = _attr_dir(ctx) / name
    try:
        return path.read_text()
    except OSError as exc:
        raise Failure(f"kvctl: read {path}: {exc.strerror}{attr_hint(ctx.obj['device'], path, exc.errno)}") from None


def _keyvals(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# -- record / log -------------------------------------------------------------------


@click.group("record", invoke_without_command=True)
@click.pass_context
def record_group(ctx: click.Context) -> None:
    """Record every command the device gets: start FILE, stop; alone: the state."""
    if ctx.invoked_subcommand is None:
        click.echo(_read(ctx, "record"), nl=False)


@record_group.command("start")
@click.argument("file")
@click.pass_context
def record_start(ctx: click.Context, file: str) -> None:
    """Start recording to FILE (created 0600, or appended to if it is a recording)."""
    # The daemon opens a path from anyone but root with that user's rights
    # and follows no symlink for them: resolve it here, as that user.  A
    # path from root stays as given, for the daemon to check its links.
    path = os.path.abspath(file) if os.geteuid() == 0 else os.path.realpath(file)
    if not os.path.isdir(os.path.dirname(path)):
        raise Failure(f"kvctl: record start: no directory {os.path.dirname(path)}")
    try:
        _write(ctx, "record", f"start {path}\n")
    except Failure:
        why = _keyvals(_read(ctx, "record")).get("last_error")
        if why:
            raise Failure(f"kvctl: record start: {why}") from None
        raise


@record_group.command("stop")
@click.pass_context
def record_stop(ctx: click.Context) -> None:
    """Stop recording (the file is complete when this returns)."""
    _write(ctx, "record", "stop\n")


def _open(file: str) -> Reader:
    """The recording, to be read record by record; one line if it cannot be."""
    from kvcpu_dev.bench import kvrec as fmt

    try:
        return fmt.Reader(file)
    except fmt.FormatError as exc:
        raise Failure(f"kvctl: {file}: {exc}") from None
    except OSError as exc:
        raise Failure(f"kvctl: {file}: {exc.strerror}") from None


def _say_damage(file: str, reader: Reader) -> None:
    """What the reader skipped, on stderr (the records it kept were used)."""
    note = reader.damage.note()
    if note:
        click.echo(f"kvctl: {file}: {note}", err=True)


@click.command("log")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.option("--kind", "only", default=None, help="Only this command (STEP, HOT, ...).")
def log_cmd(file: str, as_json: bool, only: str | None) -> None:
    """Print a recording decoded, as tcpdump -r does (times from its start).
    A command that came through madvise (kvcpu-dev run) ends in
    [via madvise(104|105|106)]."""
    from kvcpu_dev.bench import kvrec as fmt

    number = None
    if only:
        try:
            number = fmt.command_number(only)
        except ValueError as exc:
            raise Failure(f"kvctl: {exc}") from None
    with _open(file) as reader:
        base = reader.header.mono_ns
        out = sys.stdout
        try:
            for r in reader:
                if number is not None and (r.kind != fmt.KIND_IOCTL or r.cmd != number):
                    continue
                out.write((json.dumps(r.as_dict()) if as_json else fmt.describe(r, base)) + "\n")
            out.flush()
        except BrokenPipeError:  # kvctl log F | head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
    _say_damage(file, reader)


# -- replay -------------------------------------------------------------------------


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: say max or a factor such as 1.0") from None
    if not 0 < speed < float("inf"):
        raise click.BadParameter(f"{value!r} must be above 0")
    return speed


@click.command("replay")
@click.argument("file")
@click.option("--device", "device", metavar="PATH", default=None, help="The node (default: kvctl's --device).")
@click.option("--speed", default="1.0", callback=_speed, show_default=True,
              help="max, or a factor of the recorded pace (pauses over a minute are cut to one).")
@click.option("--check", is_flag=True, help="Exit 1 at the first errno or reply that differs.")
@click.option("--model", "model", is_flag=True, help="Run it through the device model in-process instead.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="--model: model parameters (TOML); default: the recorded ones.")
@click.option("--timing", is_flag=True, help="--model: include the scans' wall-clock durations.")
@click.option("--json", "as_json", is_flag=True, help="--model: the stats as JSON.")
@click.pass_context
def replay_cmd(ctx: click.Context, file: str, device: str | None, speed: float | None, check: bool,
               model: bool, config: pathlib.Path | None, timing: bool, as_json: bool) -> None:
    """Re-issue a recording against a node, or through the model (--model)."""
    from kvcpu_dev.bench import replay

    if model:
        recorded = None
        if config is None:
            with _open(file) as reader:
                recorded = replay.recorded_model_config(reader)
        try:
            cfg = replay.model_config_for(recorded, config)
        except (OSError, ValueError) as exc:
            raise Failure(f"kvctl: model configuration: {getattr(exc, 'strerror', None) or exc}") from None
        tally = replay.ResetTally()
        with _open(file) as reader:
            stats = replay.replay_model(tally.watch(reader), cfg, timing=timing)
        _say_damage(file, reader)
        note = tally.note()
        if note:
            click.echo(f"kvctl: note: {note}", err=True)
        if as_json:
            click.echo(json.dumps(stats, indent=2, sort_keys=True))
        else:
            for key, value in stats.items():
                click.echo(f"{key}={value}")
        return
    path = device or ctx.obj["device"]
    attrs = find_attr_dir(path) if device else _attr_dir(ctx)
    with _open(file) as reader:
        try:
            res = replay.replay_node(reader, path, speed=speed, check=check, attr_dir=attrs)
        except replay.Mismatch as exc:
            _say_damage(file, reader)
            raise Failure(f"replay: {exc}") from None
        except OSError as exc:
            raise Failure(f"kvctl: replay: {exc.filename or path}: {exc.strerror}") from None
    _say_damage(file, reader)
    errors = ", ".join(f"{k} {v}" for k, v in sorted(res.errors.items()))
    line = (f"replayed {res.commands} commands in {res.seconds:.3f} s ({res.rate:.0f}/s)"
            f"{'; errors ' + errors if errors else ''}")
    if res.stores or res.controls:
        line += f"; {res.stores} stores, {res.controls} controls"
    if res.skipped_faulted:
        line += f"; {res.skipped_faulted} refused by injected faults not re-issued"
    if res.skipped_unknown:
        line += f"; {res.skipped_unknown} unknown ioctl numbers not re-issued"
    if res.skipped_no_attrs:
        line += f"; {res.skipped_no_attrs} stores/controls skipped (no attribute files)"
    if res.pauses_cut:
        line += f"; {res.pauses_cut} pauses over {replay.MAX_PAUSE_S:.0f} s cut to {replay.MAX_PAUSE_S:.0f} s"
    if check:
        line += "; every errno and reply as recorded"
    click.echo(line)


# -- faults and controls -----------------------------------------------------------


@click.group("fault")
def fault_group() -> None:
    """Injected faults: add, list, del, clear."""


@fault_group.command("add")
@click.argument("command", metavar="CMD")
@click.option("--errno", "err", default=None, help="The errno the command fails with (EIO, 5...).")
@click.option("--count", type=str, default=None, help="The next N matching commands.")
@click.option("--every", type=str, default=None, help="Every N-th matching command.")
@click.option("--probability", type=str, default=None, help="Each with probability P (0..1).")
@click.option("--seed", type=str, default=None, help="With --probability: the rule's own seed.")
@click.option("--latency", default=None, help="Delay the reply (5ms, 200us); alone, the command still runs.")
@click.pass_context
def fault_add(ctx: click.Context, command: str, err: str | None, count: str | None, every: str | None,
              probability: str | None, seed: str | None, latency: str | None) -> None:
    """Fail (or delay) CMD (STEP, HOT, EVICT, PREFETCH, SHARE, WEIGHTS, TELEMETRY, any)."""
    words = [f"cmd={command}"]
    for key, value in (("errno", err), ("count", count), ("every", every), ("probability", probability),
                       ("seed", seed), ("latency", latency)):
        if value is not None:
            words.append(f"{key}={value}")
    try:
        fault_rules.parse_rule(words)
    except ValueError as exc:
        raise Failure(f"kvctl: fault add: {exc}") from None
    _write(ctx, "faults", "add " + " ".join(words) + "\n")
    lines = _read(ctx, "faults").splitlines()
    if lines:
        click.echo(max(lines, key=lambda line: int(_keyvals(line.replace(" ", "\n"))["id"])))


@fault_group.command("list")
@click.pass_context
def fault_list(ctx: click.Context) -> None:
    """The installed rules, with how often each matched (seen) and fired (hits)."""
    click.echo(_read(ctx, "faults"), nl=False)


@fault_group.command("clear")
@click.pass_context
def fault_clear(ctx: click.Context) -> None:
    """Remove every rule."""
    _write(ctx, "faults", "clear\n")


@fault_group.command("del")
@click.argument("rule_id", metavar="ID")
@click.pass_context
def fault_del(ctx: click.Context, rule_id: str) -> None:
    """Remove rule ID."""
    try:
        fault_rules.parse_id(rule_id)
    except ValueError as exc:
        raise Failure(f"kvctl: fault del: {exc}") from None
    try:
        _write(ctx, "faults", f"del {rule_id}\n")
    except Failure:
        raise Failure(f"kvctl: fault del: no rule {rule_id}") from None


def _control(word: str, doc: str) -> click.Command:
    @click.pass_context
    def run(ctx: click.Context) -> None:
        _write(ctx, "control", word + "\n")

    run.__doc__ = doc
    return click.command(word)(run)


reset_cmd = _control("reset", "Function-level reset: the power-on state (counted).")
unplug_cmd = _control("unplug", "Surprise removal: opens and ioctls fail ENODEV until replug.")
replug_cmd = _control("replug", "Bring an unplugged device back.")


@click.command("top")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=0.5, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after N refreshes.")
@click.option("--once", is_flag=True, help="One refresh (same as --count 1).")
@click.pass_context
def top_cmd(ctx: click.Context, interval: float, count: int | None, once: bool) -> None:
    """A live view: command rates, latency percentiles, tiers, DMA, faults."""
    from . import top

    try:
        top.run(_attr_dir(ctx), interval, 1 if once else count)
    except top.TopError as exc:
        hint = attr_hint(ctx.obj["device"], _attr_dir(ctx) / "metrics", errno.ENOENT)
        raise Failure(f"kvctl: top: {exc}{hint}") from None
