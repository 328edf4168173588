"""kvcpu-eval: replay a request trace against LRU, ARC, priority-LRU,
Belady and the device model's HEPC, and report block hit ratios."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from . import report, runner
from .policies import POLICIES, Options
from .traces import read_trace

MiB = 2**20


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--capacity-blocks", "capacities", default="2%,4%,6%,8%,10%", show_default=True,
              help="Fast-tier capacities in trace blocks, comma-separated; N% is a share of the unique blocks.")
@click.option("--policies", default="lru,arc,prio-lru,belady", show_default=True,
              help=f"Comma-separated, from: {', '.join(POLICIES)}.")
@click.option("--requests", "limit", type=int, default=None, help="Use only the first N requests.")
@click.option("--block-mib", type=float, default=64.0, show_default=True,
              help="Bytes of KV one trace block holds, in MiB (64: 512 tokens of Llama-3-8B fp16).")
@click.option("--hepc-set", "hepc_set", multiple=True, metavar="KEY=VALUE",
              help="Override a runtime adapter parameter for the hepc policies (see docs/evaluation.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of hit ratio against capacity.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a markdown report (table, plot, parameters).")
@click.option("--tune", is_flag=True, help="Search HEPC weights and thresholds on the first part of the trace "
                                            "(by time) and report them on the held-out rest.")
@click.option("--train-fraction", type=float, default=0.5, show_default=True, help="With --tune: the training part.")
@click.option("--budget", type=int, default=30, show_default=True, help="With --tune: settings sampled from the grid.")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Runs in parallel processes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
def main(trace: Path, capacities: str, policies: str, limit: int | None, block_mib: float, hepc_set: tuple[str, ...],
         as_json: bool, plot: Path | None, report_path: Path | None, tune: bool, train_fraction: float,
         budget: int, jobs: int, progress: bool | None) -> None:
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
    result["parameters"] = {**result.get("parameters", {}), **_parameters(opts, names)}
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


def _overrides(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--hepc-set wants KEY=VALUE, got {item!r}")
        out[key.strip()] = json.loads(value) if value.strip()[:1] in "0123456789-[{tf" else value
    return out


def _parameters(opts: Options, names: list[str]) -> dict:
    params: dict = {"block_bytes": opts.block_bytes}
    if any(n.startswith("hepc") for n in names):
        from . import runtime
        params["hepc"] = {n: runtime.describe(n, opts) for n in names if n.startswith("hepc")}
    return params
