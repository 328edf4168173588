"""Record -> evaluate: a recording made in-process (core.Driver + the
recorder, no daemon) evaluated with kvcpu-eval: the access sequence it
maps to, the classic policies on it, HEPC through the recorded register
writes, and the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from evalkit import write_recording

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.bench import replay
from kvcpu_dev.evaluation import from_recording as recording
from kvcpu_dev.evaluation import lru
from kvcpu_dev.evaluation.cli import main

MiB = 2**20
B = 2 * MiB  # the model's default block size

MIXED = [
    ("HOT", 0, 3 * MiB),          # blocks 0, 1 (a partial overlap acts on the whole block)
    ("HOT", MiB, 1),              # block 0
    ("SHARE", B, 2 * B),          # blocks 1, 2
    ("PREFETCH", 5 * B, B, 9),    # not an access by default
    ("REFUSED", "HOT", 20 * B, B),  # EIO from a fault: never reached the device
    ("EVICT", 2 * B, B),          # not an access
    ("STEP", 1),
    ("RESET",),                   # a new segment: everything forgotten
    ("HOT", 0, B),
    ("HOT", 0, B),
]


@pytest.fixture
def mixed(tmp_path):
    return write_recording(tmp_path / "mixed.kvrec", MIXED)


def test_the_writer_made_a_recording(mixed):
    rec = fmt.read(mixed)
    assert rec.damage.skipped == 0
    assert [r.name for r in rec.records if r.kind == fmt.KIND_IOCTL] == [
        "HOT", "HOT", "SHARE", "PREFETCH", "HOT", "EVICT", "STEP", "HOT", "HOT"]
    hot = rec.commands()[0]
    assert hot.writes and hot.fields["len"] == 3 * MiB


def test_access_sequence(mixed):
    seq = recording.read_recording(mixed)
    assert seq.block_size == B
    assert seq.segments == [[0, 1, 0, 1, 2], [0, 0]]
    assert seq.priorities == [[35, 35, 35, 100, 100], [35, 35]]
    assert seq.hints == {"HOT": 4, "SHARE": 1}
    assert (seq.commands, seq.refused, seq.resets) == (9, 1, 1)
    assert seq.accesses == 7 and seq.unique_blocks == 3 + 1
    with_prefetch = recording.read_recording(mixed, recording.parse_access_hints("hot,share,prefetch"))
    assert with_prefetch.segments == [[0, 1, 0, 1, 2, 5], [0, 0]]
    coarse = recording.read_recording(mixed, block_size=4 * B)
    assert coarse.segments == [[0, 0, 0], [0, 0]]  # one 8 MiB block per hint


def test_classic_policies_start_each_segment_empty(mixed):
    seq = recording.read_recording(mixed)
    for name in recording.CLASSIC:
        # [0,1,0,1,2] then [0,0]: 2 + 1 hits at 2 or 3 blocks; without the
        # reset the trailing 0s would make it 4 at 3 blocks
        assert recording.run_classic(seq, name, 3).hits == 3, name
        assert recording.run_classic(seq, name, 1).hits == 1, name
    c = recording.run_classic(seq, "lru", 2)
    assert (c.accesses, c.hits, c.reloads) == (7, 3, 0)
    assert c.bytes_up == 0 and c.bytes_down == c.evictions * B


def test_prio_lru_takes_its_priorities_from_the_hints(tmp_path):
    # A shared (SHARE_PREFIX) block survives two private ones at 2 blocks
    f = write_recording(tmp_path / "p.kvrec", [("SHARE", 0, B), ("HOT", B, B), ("HOT", 2 * B, B), ("SHARE", 0, B)])
    seq = recording.read_recording(f)
    assert seq.segments == [[0, 1, 2, 0]]
    assert recording.run_classic(seq, "lru", 2).hits == 0
    assert recording.run_classic(seq, "prio-lru", 2).hits == 1
    assert recording.run_classic(seq, "lru", 2).hits == lru.simulate([0, 1, 2, 0], 2).hits


def test_hepc_without_steps_keeps_what_fits(tmp_path):
    f = write_recording(tmp_path / "h.kvrec", [("HOT", 0, B), ("HOT", B, B), ("HOT", B, B), ("HOT", 0, B)])
    seq = recording.read_recording(f)
    big = recording.run_hepc(seq, 8)
    assert (big.accesses, big.hits, big.t1_hits, big.reloads) == (4, 2, 0, 0)
    # HBM of one block: block 1 is allocated in T1 (spilled) and stays there
    small = recording.run_hepc(seq, 1)
    assert (small.hits, small.t1_hits, small.reloads) == (1, 1, 1)
    assert small.stall_s > 0 and small.extra["alloc_spilled"] == 1


def test_hepc_follows_the_recorded_weights(tmp_path):
    # default registers: block 0 sinks once its HOT protection (4 steps) lapses
    steps = [("STEP", s) for s in range(1, 9)]
    sink = write_recording(tmp_path / "sink.kvrec", [("HOT", 0, B), *steps, ("HOT", 0, B)])
    c = recording.run_hepc(recording.read_recording(sink), 8)
    assert (c.accesses, c.hits) == (2, 0) and c.bytes_down > 0
    # EVICT_THRESH 0 (SET_WEIGHTS, recorded): nothing is ever a candidate
    keep = write_recording(tmp_path / "keep.kvrec",
                           [("WEIGHTS", 1, 1, 2, 200, 0, 0xE000), ("HOT", 0, B), *steps, ("HOT", 0, B)])
    c = recording.run_hepc(recording.read_recording(keep), 8)
    assert (c.accesses, c.hits, c.bytes_down) == (2, 1, 0)


def test_hepc_replays_as_kvctl_replay_model(tmp_path):
    cmds = [("HOT", 0, 6 * B), ("SHARE", 0, 2 * B), ("PREFETCH", 8 * B, B, 3)]
    cmds += [("STEP", s) for s in range(1, 7)] + [("HOT", 0, 4 * B), ("EVICT", 0, 2 * B), ("STEP", 7)]
    f = write_recording(tmp_path / "r.kvrec", cmds)
    seq = recording.read_recording(f)
    hbm = recording.parse_capacities("hbm", seq)[0]
    c = recording.run_hepc(seq, hbm)
    records = fmt.read(f).records
    stats = replay.replay_model(records, replay.model_config_for(replay.recorded_model_config(records), None))
    assert (c.bytes_up, c.bytes_down) == (stats["bytes_up"], stats["bytes_down"])
    assert (c.prefetch_on_time, c.prefetch_late) == (stats["prefetch_on_time"], stats["prefetch_late"])
    assert c.extra["scans"] == stats["scans"] and stats["bytes_down"] > 0


def test_evaluate_is_deterministic_and_shaped(mixed):
    seq = recording.read_recording(mixed)
    a = recording.evaluate(seq, [1, 2, 3], list(recording.POLICIES))
    b = recording.evaluate(recording.read_recording(mixed), [1, 2, 3], list(recording.POLICIES))
    assert a == b
    assert a["source"] == "recording" and a["accesses"] == 7 and a["capacity_blocks"] == [1, 2, 3]
    assert set(a["policies"]) == set(recording.POLICIES)
    assert all(len(s["hit_ratio"]) == 3 for s in a["policies"].values())
    with pytest.raises(ValueError, match="does not apply to a recording"):
        recording.evaluate(seq, [1], ["hepc-default"])


def test_a_hint_over_the_address_space_is_left_out_and_counted(tmp_path):
    """Issue 23 (8): such hints made the access sequence grow by 2^20
    blocks each (a 905-byte file: 1.2 GB, 162 s)."""
    f = write_recording(tmp_path / "huge.kvrec", [("HOT", 0, 1 << 62), ("HOT", 0, B)] * 8)
    seq = recording.read_recording(f)
    assert seq.hints_too_large == 8 and seq.segments == [[0] * 8]
    r = CliRunner().invoke(main, [str(f), "--capacity-blocks", "1", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["recording"]["hints_too_large"] == 8


def test_too_many_accesses_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(recording, "MAX_ACCESSES", 100)
    f = write_recording(tmp_path / "many.kvrec", [("HOT", 0, 60 * B), ("HOT", 0, 60 * B)])
    with pytest.raises(ValueError, match="more than 100 block accesses"):
        recording.read_recording(f)


def test_cli(mixed, tmp_path):
    run = CliRunner().invoke
    r = run(main, ["--recording", str(mixed), "--capacity-blocks", "1,3", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert list(out["policies"]) == list(recording.POLICIES)
    assert out["policies"]["lru"]["hit_ratio"] == [1 / 7, 3 / 7]
    assert out["recording"]["refused"] == 1 and out["parameters"]["access_hints"] == ["HOT", "SHARE"]
    # detected by its magic, without --recording; a markdown report
    report = tmp_path / "r.md"
    r = run(main, [str(mixed), "--capacity-blocks", "50%", "--policies", "lru,hepc", "--report", str(report),
                   "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "recording, 9 commands (1 refused)" in r.output and "hepc" in report.read_text()
    for args, msg in ((["--tune"], "--tune does not apply"), (["--policies", "hepc-default"], "does not apply"),
                      (["--access-hints", "STEP"], "access hints must be")):
        r = run(main, [str(mixed), *args, "--no-progress"])
        assert r.exit_code != 0 and msg in r.output, r.output
    empty = write_recording(tmp_path / "e.kvrec", [("STEP", 1)])
    r = run(main, [str(empty), "--no-progress"])
    assert r.exit_code != 0 and "nothing to evaluate" in r.output


def test_hepc_can_beat_belady_by_spilling(tmp_path):
    # HBM of one block: block 1 never enters HBM (allocated in T1), so block
    # 0 stays: a bypass, which demand-paging Belady is not allowed
    f = write_recording(tmp_path / "b.kvrec", [("HOT", 0, B), ("HOT", B, B)] * 2)
    seq = recording.read_recording(f)
    assert recording.run_classic(seq, "belady", 1).hits == 0
    c = recording.run_hepc(seq, 1)
    assert (c.hits, c.t1_hits) == (1, 1)
