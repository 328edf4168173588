"""kvcpu-eval's outputs: the --json shape, the report and plot files,
determinism, and reading any file of the trace format."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from kvcpu_dev.evaluation import runner
from kvcpu_dev.evaluation.cli import main
from kvcpu_dev.evaluation.result import EvalResult, Series
from kvcpu_dev.evaluation.traces import read_trace

CLASSIC = "lru,arc,prio-lru,belady"


def run_cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_json_shape(trace_file):
    out = json.loads(run_cli(str(trace_file), "--capacity-blocks", "40,10,20", "--policies", CLASSIC, "--json"))
    assert out["trace"] == "synthetic.jsonl"
    assert out["capacity_blocks"] == [40, 10, 20]
    tr = read_trace(trace_file)
    assert out["accesses"] == len(tr.accesses)
    assert list(out["policies"]) == CLASSIC.split(",")
    for s in out["policies"].values():
        assert len(s["hit_ratio"]) == 3 and all(0 <= h <= 1 for h in s["hit_ratio"])
        assert s["hits"] == [round(h * out["accesses"]) for h in s["hit_ratio"]]
    lru = out["policies"]["lru"]["hit_ratio"]
    assert lru[1] <= lru[2] <= lru[0]  # in the order given


def test_capacities_as_shares_of_the_unique_blocks(small_trace):
    u = small_trace.unique_blocks
    assert runner.parse_capacities("10%,50", u) == [round(0.1 * u), 50]
    with pytest.raises(ValueError):
        runner.parse_capacities("0", u)
    with pytest.raises(ValueError):
        runner.parse_policies("lru,fifo")


def test_two_runs_give_identical_results(small_trace):
    a = runner.evaluate(small_trace, [10, 30], CLASSIC.split(","), show_progress=False)
    b = runner.evaluate(small_trace, [10, 30], CLASSIC.split(","), show_progress=False)
    assert a == b


def needs_matplotlib() -> None:
    """The eval extra: skipped without it, except in CI (.ci/run sets
    KVCPU_REQUIRE_EVAL=1: the set-up for tests installs it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("KVCPU_REQUIRE_EVAL") == "1":
            pytest.fail("KVCPU_REQUIRE_EVAL=1 but matplotlib is missing (the eval extra: scripts/setup.sh --test)",
                        pytrace=False)
        pytest.skip("matplotlib is not installed (the eval extra: pip install -e '.[eval]')")


def test_report_and_plot(trace_file, tmp_path):
    needs_matplotlib()
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    out = run_cli(str(trace_file), "--capacity-blocks", "10,30", "--policies", "lru,belady",
                  "--report", str(md), "--plot", str(png))
    assert "belady" in out
    text = md.read_text()
    assert "| lru |" in text and "r.png" in text and "## Parameters" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_any_file_of_the_format(tmp_path):
    p = tmp_path / "other.jsonl"
    p.write_text('{"timestamp": 5, "input_length": 1024, "output_length": 3, "hash_ids": [7, 8], "extra": 1}\n'
                 "\n"
                 '{"hash_ids": [7, 9]}\n')
    tr = read_trace(p)
    assert tr.accesses == [7, 8, 7, 9] and tr.offsets == [0, 2, 4]
    assert tr.requests[1].timestamp_ms == 0 and tr.requests[1].output_length == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hash_ids": [1]}\n{"hash_ids": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_trace(bad)
    res = CliRunner().invoke(main, [str(bad)])
    assert res.exit_code == 1 and "bad.jsonl:2" in res.output


def test_split_by_time(small_trace):
    train, held = small_trace.split_by_time(0.5)
    assert len(train.requests) + len(held.requests) == len(small_trace.requests)
    assert train.requests[-1].timestamp_ms <= held.requests[0].timestamp_ms
    assert abs(len(train.requests) - len(held.requests)) <= 2


# -- the plot (issue 22): legend clear of the lines, percent axis, T1 hits -----------


def _result(asked: list[str] | None = None) -> EvalResult:
    caps = [50, 100, 150, 200]
    none: Series = {"t1_hit_ratio": [0.0] * 4, "t1_hits": [0] * 4}
    rising: Series = {"hit_ratio": [0.55, 0.75, 0.88, 0.95], **none}  # Belady, in the top left corner
    flat: Series = {"hit_ratio": [0.2, 0.3, 0.35, 0.4], **none}
    hepc: Series = {"hit_ratio": [0.1, 0.2, 0.3, 0.35], "t1_hit_ratio": [0.3, 0.25, 0.2, 0.15],
                    "t1_hits": [300, 250, 200, 150]}
    result: EvalResult = {"trace": "t.jsonl", "requests": 10, "accesses": 1000, "unique_blocks": 2000,
                          "capacity_blocks": caps, "block_bytes": 1,
                          "policies": {"belady": rising, "lru": flat, "hepc": hepc}}
    if asked is not None:
        result["capacity_asked"] = asked
    return result


def _figure(result):
    needs_matplotlib()
    from kvcpu_dev.evaluation import report

    fig = report.figure(result)
    fig.canvas.draw()
    return fig, fig.axes[0]


def test_the_legend_covers_no_line():
    fig, ax = _figure(_result())
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent()), "the legend sits inside the plot"
    for line in ax.get_lines():
        for x, y in line.get_xydata():
            px, py = ax.transData.transform((x, y))
            assert not legend.contains(px, py), line.get_label()
    assert fig.get_window_extent().contains(legend.x1 - 1, legend.y1 - 1)  # and it is in the picture


def test_capacities_asked_in_percent_are_plotted_in_percent():
    from kvcpu_dev.evaluation import report

    result = _result(["2.5%", "5%", "7.5%", "10%"])
    _, ax = _figure(result)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["belady"].get_xdata()) == [2.5, 5.0, 7.5, 10.0]
    assert ax.get_xlabel() == "fast-tier capacity (% of the 2000 unique blocks)"
    assert report.hit_table(result)[0][1:] == ["2.5% (50 blocks)", "5% (100 blocks)", "7.5% (150 blocks)",
                                               "10% (200 blocks)"]
    _, ax = _figure(_result(["50", "100", "150", "200"]))  # asked in blocks: plotted in blocks
    assert list(ax.get_lines()[0].get_xdata()) == [50, 100, 150, 200]
    assert ax.get_xlabel() == "fast-tier capacity (trace blocks)"


def test_hepc_t1_hits_are_plotted():
    _, ax = _figure(_result())
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["hepc: HBM or T1"].get_ydata()) == pytest.approx([40, 45, 50, 50])
    assert lines["hepc: HBM or T1"].get_color() == lines["hepc"].get_color()
    assert "lru: HBM or T1" not in lines  # only where there are T1 hits


def test_the_command_line_keeps_the_capacities_as_asked(trace_file):
    out = json.loads(run_cli(str(trace_file), "--capacity-blocks", "10%,30", "--policies", "lru", "--json"))
    assert out["capacity_asked"] == ["10%", "30"]
