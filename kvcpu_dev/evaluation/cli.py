"""kvcpu-eval: replay a request trace against LRU, ARC, priority-LRU,
Belady and the device model's HEPC, and report block hit ratios."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from . import from_recording, report, runner
from .policies import POLICIES, Options
from .result import EvalResult
from .traces import read_trace

MiB = 2**20
#: The model's largest block (model/config.py LIMITS): 1 TiB.
MAX_BLOCK_BYTES = 2**40


def _block_mib(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A block of at least a byte and at most 1 TiB (0, inf and nan are
    not sizes)."""
    if value is not None and not (math.isfinite(value) and 1 <= round(value * MiB) <= MAX_BLOCK_BYTES):
        raise click.BadParameter(f"{value!r}: a block size in MiB, from 1 byte to 1 TiB")
    return value


def _fraction(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 < value < 1:  # also refuses nan
        raise click.BadParameter(f"{value!r}: a fraction strictly between 0 and 1")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--capacity-blocks", "capacities", default="2%,4%,6%,8%,10%", show_default=True,
              help="Fast-tier capacities in trace blocks, comma-separated; N% is a share of the unique blocks.")
@click.option("--policies", default=None,
              help=f"Comma-separated, from: {', '.join(POLICIES)} (default: lru,arc,prio-lru,belady; "
                   "for a recording also hepc, the device as recorded).")
@click.option("--requests", "limit", type=click.IntRange(min=1), default=None, help="Use only the first N requests.")
@click.option("--block-mib", type=float, default=None, callback=_block_mib,
              help="Bytes of KV one trace block holds, in MiB (default 64: 512 tokens of Llama-3-8B fp16). "
                   "For a recording: the device block size the hints are split into (default: the "
                   "recorded model configuration's).")
@click.option("--recording", "is_recording", is_flag=True,
              help="TRACE is a .kvrec recording of a device's ioctl stream (also detected by its magic).")
@click.option("--access-hints", default=",".join(from_recording.DEFAULT_ACCESS_HINTS), show_default=True,
              help="With a recording: the hints whose blocks are accesses (from HOT, SHARE, PREFETCH, EVICT).")
@click.option("--model-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With a recording: the model configuration (TOML) instead of the recorded one.")
@click.option("--hepc-set", "hepc_set", multiple=True, metavar="KEY=VALUE",
              help="Override a runtime adapter parameter for the hepc policies (see docs/evaluation.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of hit ratio against capacity.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a markdown report (table, plot, parameters).")
@click.option("--tune", is_flag=True, help="Search HEPC weights and thresholds on the first part of the trace "
                                            "(by time) and report them on the held-out rest.")
@click.option("--train-fraction", type=float, default=0.5, show_default=True, callback=_fraction,
              help="With --tune: the training part.")
@click.option("--budget", type=click.IntRange(1, 10_000), default=30, show_default=True,
              help="With --tune: settings sampled from the grid.")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Runs in parallel processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
def main(trace: Path, capacities: str, policies: str | None, limit: int | None, block_mib: float | None,
         is_recording: bool, access_hints: str, model_config: Path | None, hepc_set: tuple[str, ...],
         as_json: bool, plot: Path | None, report_path: Path | None, tune: bool, train_fraction: float,
         budget: int, jobs: int, progress: bool | None) -> None:
    if is_recording or from_recording.is_recording(trace):
        _main_recording(trace, capacities, policies, limit, block_mib, access_hints, model_config, hepc_set,
                        tune, as_json, plot, report_path, progress)
        return
    policies = policies or "lru,arc,prio-lru,belady"
    block_mib = 64.0 if block_mib is None else block_mib
    try:
        tr = read_trace(trace, limit)
        caps = runner.parse_capacities(capacities, tr.unique_blocks)
        names = runner.parse_policies(policies)
        opts = Options(block_bytes=round(block_mib * MiB), hepc=_overrides(hepc_set))
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if tune:
        from . import tuning
        result = tuning.tune(tr, caps, opts, train_fraction, budget, jobs, show_progress=progress)
        names = ["hepc-default"]
    else:
        result = runner.evaluate(tr, caps, names, opts, show_progress=progress, jobs=jobs)
        result["capacity_asked"] = _asked(capacities)
    result["parameters"] = {**result.get("parameters", {}), **_parameters(opts, names)}
    _output(result, as_json, plot, report_path)


def _main_recording(path: Path, capacities: str, policies: str | None, limit: int | None, block_mib: float | None,
                    access_hints: str, model_config: Path | None, hepc_set: tuple[str, ...], tune: bool,
                    as_json: bool, plot: Path | None, report_path: Path | None, progress: bool | None) -> None:
    """kvcpu-eval on a recording: see from_recording.py and docs/evaluation.md."""
    for flag, given in (("--tune", tune), ("--requests", limit is not None), ("--hepc-set", bool(hepc_set))):
        if given:
            raise click.ClickException(f"{flag} does not apply to a recording")
    try:
        hints = from_recording.parse_access_hints(access_hints)
        block = None if block_mib is None else round(block_mib * MiB)
        seq = from_recording.read_recording(path, hints, block, model_config)
        if not seq.accesses:
            raise ValueError(f"{path.name}: no accepted {'/'.join(hints)} hint in the recording: nothing to evaluate")
        caps = from_recording.parse_capacities(capacities, seq)
        names = runner.parse_policies(policies or ",".join(from_recording.POLICIES))
        result = from_recording.evaluate(seq, caps, names, show_progress=progress)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    result["capacity_asked"] = _asked(capacities)
    result["parameters"] = {"block_bytes": seq.block_size, "access_hints": list(hints),
                            "model_config": seq.config.to_toml()}
    _output(result, as_json, plot, report_path)


def _output(result: EvalResult, as_json: bool, plot: Path | None, report_path: Path | None) -> None:
    command = "kvcpu-eval " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if plot:
        report.write_plot(result, plot)
    if report_path:
        report.write_markdown(result, report_path, plot, command)
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=False))
    else:
        click.echo(report.summary(result))
        click.echo(report.text(report.hit_table(result)))
        if "tuning" in result:
            click.echo(json.dumps(result["tuning"], indent=1))


def _asked(capacities: str) -> list[str]:
    """--capacity-blocks as written, one entry per capacity."""
    return [part.strip() for part in capacities.split(",") if part.strip()]


def _overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """--hepc-set KEY=VALUE pairs, checked against the adapter's fields."""
    from .runtime import AdapterConfig

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--hepc-set wants KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value) if value.strip()[:1] in "0123456789-[{tf" else value
        except RecursionError:
            raise ValueError(f"--hepc-set {key}: nested too deeply") from None
    AdapterConfig().replace(**out)  # ValueError with the key that is wrong
    return out


def _parameters(opts: Options, names: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {"block_bytes": opts.block_bytes}
    if any(n.startswith("hepc") for n in names):
        from . import runtime
        params["hepc"] = {n: runtime.describe(n, opts) for n in names if n.startswith("hepc")}
    return params
