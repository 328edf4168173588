"""kvctl's bench commands on what needs no daemon: ``log`` and ``replay
--model`` on recordings written here, the fault rules' text, and ``top``'s
view of two metrics readings (issue 22's first-hour notes)."""

from __future__ import annotations

import pathlib

import pytest

from kvcpu_dev.bench import faults
from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.device import abi, regs
from kvctl import cli, top


def kvctl(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def recording(path: pathlib.Path, *kinds: str) -> pathlib.Path:
    """A recording of ``kinds`` ("step", "hot", "reset") after a start mark."""
    telemetry = dict.fromkeys(abi.TELEMETRY_FIELDS, 0)
    chunks = [fmt.mark("start", device="t", telemetry=telemetry, model_config=None)]
    reg = 0
    for seq, kind in enumerate(kinds, 1):
        t = seq * 1_000_000
        if kind == "step":
            reg += 1
            chunks.append(fmt.encode(seq, t, fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, 42, 0,
                                     abi.STEP_INFO.codec.pack(seq), ((reg, regs.STEP_ADVANCE, seq),)))
        elif kind == "hot":
            va, length = 0x7F00_0000_0000 + seq * (2 << 20), 2 << 20
            chunks.append(fmt.encode(seq, t, fmt.KIND_IOCTL, abi.KV_CPU_MARK_HOT, 42, 0,
                                     abi.BLOCK_INFO.codec.pack(va, length, 0),
                                     ((reg + 1, regs.BOOST_ADDR, va), (reg + 2, regs.BOOST_LEN, length))))
            reg += 2
        else:
            chunks.append(fmt.encode(seq, t, fmt.KIND_RESET, 0, 0, 0, b""))
    path.write_bytes(fmt.header_bytes({"created_by": "test"}) + b"".join(chunks))
    return path


def test_log_starts_flush_left(capsys, tmp_path):
    code, out, _ = kvctl(capsys, "log", str(recording(tmp_path / "a.kvrec", "step", "hot")))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "-- recording start" in lines[0]
    assert not any(line.startswith(" ") for line in lines)  # no line that looks blank at its start


def test_replay_model_says_why_stats_are_empty_after_a_final_reset(capsys, tmp_path):
    path = recording(tmp_path / "r.kvrec", "hot", "step", "step", "reset")
    code, out, err = kvctl(capsys, "replay", "--model", str(path))
    assert code == 0 and "steps=0" in out.splitlines()  # the power-on statistics...
    assert err == ("kvctl: note: the recording ends with its reset (#4): these are the power-on statistics; "
                   "the 3 commands with register writes before it are not in them\n")  # ...and why


def test_replay_model_says_what_its_stats_count_after_a_reset(capsys, tmp_path):
    path = recording(tmp_path / "r.kvrec", "step", "reset", "hot", "step", "reset", "step")
    code, out, err = kvctl(capsys, "replay", "--model", str(path), "--json")
    assert code == 0 and '"steps": 1' in out
    assert err == ("kvctl: note: these statistics count the 1 commands with register writes after its last "
                   "reset (#5, 2 in all) only\n")
    code, _, err = kvctl(capsys, "replay", "--model", str(recording(tmp_path / "n.kvrec", "step")))
    assert (code, err) == (0, "")  # no reset, no note


def test_a_probability_rule_lists_its_seed():
    rule = {"id": 3, "cmd": abi.KV_CPU_PREFETCH, "err": 5, "mode": 2, "n": 0, "prob": 2**30,
            "seed": 7, "latency_ns": 0, "seen": 4, "hits": 1}
    line = faults.render([rule], {2: "probability"})
    assert line == "id=3 cmd=PREFETCH errno=EIO probability=0.25 seed=7 latency_ns=0 seen=4 hits=1\n"
    # what the list shows is a rule that parses back to the same draws
    words = ["cmd=PREFETCH", "errno=EIO", "probability=0.25", "seed=7"]
    assert faults.parse_rule(words).seed == 7


METRICS = """\
# TYPE kvcpu_commands_total counter
kvcpu_commands_total{{command="STEP",errno="none"}} {steps}
kvcpu_commands_total{{command="HOT",errno="none"}} {hots}
# TYPE kvcpu_command_latency_seconds histogram
kvcpu_command_latency_seconds_bucket{{command="STEP",le="1e-05"}} {steps}
kvcpu_command_latency_seconds_bucket{{command="STEP",le="+Inf"}} {steps}
kvcpu_command_latency_seconds_count{{command="STEP"}} {steps}
kvcpu_command_latency_seconds_sum{{command="STEP"}} 0.0
kvcpu_command_latency_seconds_bucket{{command="HOT",le="1e-05"}} 0
kvcpu_command_latency_seconds_bucket{{command="HOT",le="0.001"}} {hots}
kvcpu_command_latency_seconds_bucket{{command="HOT",le="+Inf"}} {hots}
kvcpu_command_latency_seconds_count{{command="HOT"}} {hots}
kvcpu_command_latency_seconds_sum{{command="HOT"}} 0.0
"""


def test_top_shows_no_old_percentiles_for_an_idle_command():
    first = top.Sample(METRICS.format(steps=10, hots=4), 0.0)
    second = top.Sample(METRICS.format(steps=30, hots=4), 0.5)  # HOT idle over the interval
    start = {r["command"]: r for r in top.view(first, None, {})["rows"]}
    assert start["HOT"]["p50"] is not None and start["HOT"]["rate"] is None  # since the start
    v = top.view(second, first, {})
    rows = {r["command"]: r for r in v["rows"]}
    assert rows["STEP"]["rate"] == pytest.approx(40.0) and rows["STEP"]["p50"] is not None
    assert rows["HOT"]["rate"] == 0.0 and rows["HOT"]["p50"] is None  # not its cumulative 0.5 ms
    assert "p50=- p90=- p99=-" in next(line for line in top.plain(v) if line.startswith("command HOT"))
    assert v["window"] == "over the last 0.5 s"
    assert top.view(first, None, {})["window"] == "since the device started"
    assert "commands: rate and latency since the device started" in top.plain(top.view(first, None, {}))
