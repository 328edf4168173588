"""`kvctl stats` and `kvctl blocks`: the device model's attribute files.

kvctl's group (group.py) imports this module when one of them runs;
register(group) adds both to another group.  They read the files from
``ctx.obj["attr_dir"]`` (a pathlib.Path the group sets from the device
path).  Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click

from kvcpu_dev.device import model_text
from kvcpu_dev.device.model_text import TIER_NAMES, tier_index

from .device import attr_hint
from .numbers import strtoull


def _read(ctx: click.Context, name: str) -> str:
    attr_dir = (ctx.obj or {}).get("attr_dir")
    if attr_dir is None:
        _fail("no attribute directory (is the device model running?)")
    path = Path(attr_dir) / name
    try:
        return path.read_text()
    except OSError as e:
        _fail(f"read {path}: {e.strerror or e}{attr_hint((ctx.obj or {}).get('device', ''), path, e.errno)}")


def _fail(message: str) -> NoReturn:
    click.echo(f"kvctl: {message}", err=True)
    raise SystemExit(1)


def parse_va_range(text: str) -> tuple[int, int]:
    """ADDR (the block holding it), START-END (END exclusive) or START+LEN,
    each number as strtoull(s, &end, 0) reads it."""
    if "+" in text:
        start, length = (strtoull(p) for p in text.split("+", 1))
        return start, start + length
    if "-" in text:
        start, end = (strtoull(p) for p in text.split("-", 1))
        return start, end
    addr = strtoull(text)
    return addr, addr + 1


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.pass_context
def stats_cmd(ctx: click.Context, as_json: bool) -> None:
    """Device model counters, tier occupancy and DMA state."""
    try:
        model = model_text.parse_stats(_read(ctx, "model_stats"))
        tiers = model_text.parse_records(_read(ctx, "tiers"))
        dma = model_text.parse_records(_read(ctx, "dma"))
    except ValueError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps({"model": model, "tiers": tiers, "dma": dma}, indent=2))
        return
    for key, value in model.items():
        click.echo(f"{key}={value}")
    click.echo("")
    click.echo(f"{'tier':<5} {'resident':>9} {'inbound':>8} {'free':>10} {'bytes_in':>16} {'bytes_out':>16}")
    for t in tiers:
        click.echo(f"{t['tier']:<5} {t['resident']:>9} {t['inbound']:>8} {t['free']:>10} "
                   f"{t['bytes_in']:>16} {t['bytes_out']:>16}")
    click.echo("")
    for c in (r for r in dma if "channel" in r):
        click.echo(f"channel {c['channel']} ({c['role']}): queued={c['queued']} busy={c['busy']} "
                   f"completed={c['completed']} cancelled={c['cancelled']}")


@click.command("blocks")
@click.option("--tier", help="HBM, T1, T2, T3 (or 0-3)")
@click.option("--va", "va", metavar="ADDR|START-END|START+LEN", help="blocks overlapping this address range")
@click.option("--json", "as_json", is_flag=True, help="a JSON list of objects")
@click.pass_context
def blocks_cmd(ctx: click.Context, tier: str | None, va: str | None, as_json: bool) -> None:
    """The block directory, one line per live entry, in address order."""
    try:
        tier_name = _tier_name(tier) if tier is not None else None
        va_range = parse_va_range(va) if va is not None else None
        rows = model_text.parse_blocks(_read(ctx, "blocks"))
    except ValueError as e:
        _fail(str(e))
    if tier_name is not None:
        rows = [r for r in rows if r["tier"] == tier_name]
    if va_range is not None:
        start, end = va_range
        rows = [r for r in rows if r["va"] < end and r["va"] + r["len"] > start]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        click.echo(model_text.render_block_rows(rows), nl=False)


def _tier_name(text: str) -> str:
    return TIER_NAMES[tier_index(text)]


def register(group: click.Group) -> None:
    """Add `stats` and `blocks` to kvctl's click group."""
    group.add_command(stats_cmd)
    group.add_command(blocks_cmd)
