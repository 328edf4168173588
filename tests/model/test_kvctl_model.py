"""kvctl stats / blocks, reading the model's attribute files from a directory."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from modelkit import CheckedModel, MiB, hot, small_config, step

from kvctl import model_cmds


@click.group()
@click.pass_context
def cli(ctx):
    ctx.obj = {"attr_dir": ctx.obj}


model_cmds.register(cli)


@pytest.fixture
def attr_dir(tmp_path):
    m = CheckedModel(small_config())
    hot(m, 0, 10 * MiB)  # 8 blocks in HBM, 2 in T1
    step(m, 1)
    for a in m.attributes():
        (tmp_path / a.name).write_text(a.show())
    return tmp_path


def run(attr_dir, *args):
    return CliRunner().invoke(cli, list(args), obj=attr_dir)


def test_blocks_filters_by_tier_and_range(attr_dir):
    out = run(attr_dir, "blocks", "--tier", "t1")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].startswith("# va len entry tier") and len(lines) == 3
    rows = json.loads(run(attr_dir, "blocks", "--va", "0x100000+0x200000", "--json").output)
    assert [r["va"] for r in rows] == [MiB, 2 * MiB]
    rows = json.loads(run(attr_dir, "blocks", "--va", "0x300001", "--json").output)
    assert [r["va"] for r in rows] == [3 * MiB]
    rows = json.loads(run(attr_dir, "blocks", "--va", "0-0x100000", "--tier", "HBM", "--json").output)
    assert [(r["va"], r["tier"]) for r in rows] == [(0, "HBM")]


def test_stats_prints_and_dumps_json(attr_dir):
    out = run(attr_dir, "stats")
    assert out.exit_code == 0 and "hint_hot=1" in out.output and "channel 0 (demote)" in out.output
    data = json.loads(run(attr_dir, "stats", "--json").output)
    assert data["model"]["live_entries"] == 10 and [t["tier"] for t in data["tiers"]] == ["HBM", "T1", "T2", "T3"]


@pytest.mark.parametrize("args, message", [
    (("blocks", "--tier", "T7"), "no tier 'T7'"),
    (("blocks", "--va", "0xZZ"), "0xZZ"),
])
def test_bad_arguments_fail_with_one_line(attr_dir, args, message):
    out = run(attr_dir, *args)
    assert out.exit_code == 1 and message in out.output and out.output.count("\n") == 1


def test_a_missing_attribute_directory_fails_with_one_line(tmp_path):
    out = run(tmp_path / "nowhere", "stats")
    assert out.exit_code == 1 and out.output.startswith("kvctl: read ") and out.output.count("\n") == 1
