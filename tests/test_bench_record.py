"""The recording format and the recorder, in-process: round trip, torn and
corrupt tails, versions, append, the paths the root daemon refuses, and
kvctl staying light."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zlib

import pytest

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.device import abi
from kvcpu_dev.errors import StartError


def _records() -> list[bytes]:
    return [
        fmt.mark("start", device="t", telemetry={"current_step": 0}),
        fmt.encode(1, 100, fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, 42, 0,
                   abi.STEP_INFO.codec.pack(128), ((1, 0x100, 128),), comm=b"vllm"),
        fmt.encode(2, 200, fmt.KIND_IOCTL, abi.KV_CPU_MARK_HOT, 42, 5,
                   abi.BLOCK_INFO.codec.pack(0x1000, 0, 0), (), fault=3, latency_us=7, service_ns=900),
        fmt.encode(3, 300, fmt.KIND_STORE, 1, 0, 0, (9).to_bytes(4, "little")),
        fmt.encode(4, 400, fmt.KIND_RESET, 0, 0, 0, b""),
    ]


def write(path: pathlib.Path, *chunks: bytes) -> None:
    path.write_bytes(fmt.header_bytes({"created_by": "test"}) + b"".join(chunks))


def test_round_trip(tmp_path):
    f = tmp_path / "a.kvrec"
    write(f, *_records())
    rec = fmt.read(f)
    assert rec.torn == 0 and rec.header.version == fmt.VERSION
    assert rec.header.meta["created_by"] == "test"
    mark, step, hot, store, reset = rec.records
    assert mark.meta == {"mark": "start", "device": "t", "telemetry": {"current_step": 0}}
    assert (step.name, step.step, step.pid, step.comm, step.writes) == ("STEP", 128, 42, "vllm", ((1, 0x100, 128),))
    assert (hot.name, hot.va, hot.len, hot.errno, hot.fault, hot.latency_us, hot.service_ns) == \
        ("HOT", 0x1000, 0, 5, 3, 7, 900)
    assert store.fields == {"w_f": 9} and reset.name == "reset"
    assert rec.commands() == [step, hot]
    with pytest.raises(AttributeError):
        step.va  # noqa: B018
    assert "STEP(step=128) -> ok" in fmt.describe(step)
    assert "HOT(va=0x1000, len=0, target_step=0) -> EIO [fault 3] [+7us]" in fmt.describe(hot)
    assert fmt.command_number("step") == fmt.command_number("KV_CPU_STEP_ADVANCE")


@pytest.mark.parametrize("cut", [1, 5, 8, 20])
def test_torn_last_record_is_skipped(tmp_path, cut):
    records = _records()
    f = tmp_path / "torn.kvrec"
    write(f, *records[:-1], records[-1][:cut])
    rec = fmt.read(f)
    assert len(rec.records) == len(records) - 1 and rec.torn == cut


def test_corrupt_record_stops_reading(tmp_path):
    records = _records()
    bad = bytearray(records[2])
    bad[-1] ^= 0xFF
    f = tmp_path / "bad.kvrec"
    write(f, records[0], records[1], bytes(bad), records[3])
    rec = fmt.read(f)
    assert len(rec.records) == 2 and rec.torn == len(bad) + len(records[3])
    assert zlib.crc32(b"") == 0  # the frame checks the body, not the frame


def test_not_a_recording_and_other_versions(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello world, not ours at all............")
    with pytest.raises(fmt.FormatError, match="bad magic"):
        fmt.read(f)
    head = bytearray(fmt.header_bytes())
    head[8:10] = (2).to_bytes(2, "little")
    f.write_bytes(bytes(head))
    with pytest.raises(fmt.FormatError, match="version 2"):
        fmt.read(f)


# -- the recorder's paths -------------------------------------------------------


@pytest.fixture
def recdir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the daemon's path checks are root's")
    d = tmp_path / "rec"
    d.mkdir(mode=0o755)
    return d


def test_open_new_and_append_truncates_torn_tail(recdir):
    from kvcpu_dev.bench.recorder import open_recording

    path = recdir / "r.kvrec"
    fd = open_recording(path)
    os.write(fd, _records()[1])
    os.close(fd)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "ab") as f:
        f.write(_records()[2][:10])  # a crash mid-write
    fd = open_recording(path)
    os.write(fd, _records()[4])
    os.close(fd)
    rec = fmt.read(path)
    assert rec.torn == 0 and [r.name for r in rec.records] == ["STEP", "reset"]


@pytest.mark.parametrize("case", ["relative", "world-writable dir", "symlink", "foreign file",
                                  "group-writable file", "hard link", "fifo", "missing dir"])
def test_hostile_paths_are_refused(recdir, case):
    from kvcpu_dev.bench.recorder import open_recording

    path = recdir / "r.kvrec"
    if case == "relative":
        path = pathlib.Path("r.kvrec")
    elif case == "world-writable dir":
        loose = recdir / "loose"
        loose.mkdir()
        os.chmod(loose, 0o777)
        path = loose / "r.kvrec"
    elif case == "symlink":
        path.symlink_to(recdir / "target")
    elif case == "foreign file":
        path.write_text("#!/bin/sh\n")
    elif case == "group-writable file":
        write(path)
        os.chmod(path, 0o620)
    elif case == "hard link":
        write(path)
        os.link(path, recdir / "other")
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "missing dir":
        path = recdir / "nope" / "r.kvrec"
    before = {p.name: p.lstat() for p in recdir.iterdir()}
    with pytest.raises(StartError):
        open_recording(path)
    assert not (recdir / "target").exists()
    assert {p.name: p.lstat() for p in recdir.iterdir()}.keys() == before.keys()


def test_kvctl_bench_commands_do_not_load_numpy():
    code = ("import sys\n"
            "from kvctl import cli\n"
            "from kvctl import bench_cmds, top\n"
            "import kvcpu_dev.bench.kvrec, kvcpu_dev.bench.replay\n"
            "bad = [m for m in sys.modules if m == 'numpy' or m.startswith('kvcpu_dev.model')]\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
