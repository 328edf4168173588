"""The recording format and the recorder, in-process: round trip, damage
anywhere (torn tails, flipped bytes, records no writer produces) skipped
and counted while reading goes on, version 1 still read, special files
refused, appends that never cut a byte, the paths the root daemon refuses,
and kvctl staying light."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import zlib

import pytest
from recfuzz import IMPOSSIBLE, body

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.device import abi
from kvcpu_dev.errors import StartError

TELEMETRY = dict.fromkeys(abi.TELEMETRY_FIELDS, 0)


def _records(version: int = fmt.VERSION) -> list[bytes]:
    def enc(*args, **kw):
        return fmt.encode(*args, **{**kw, "version": version})

    start = json.dumps({"mark": "start", "device": "t", "telemetry": TELEMETRY}).encode()
    return [
        enc(0, 50, fmt.KIND_MARK, 0, 0, 0, start),
        enc(1, 100, fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, 42, 0,
            abi.STEP_INFO.codec.pack(128), ((1, 0x100, 128),), comm=b"vllm"),
        enc(2, 200, fmt.KIND_IOCTL, abi.KV_CPU_MARK_HOT, 42, 5,
            abi.BLOCK_INFO.codec.pack(0x1000, 0, 0), (), fault=3, latency_us=7, service_ns=900),
        enc(3, 300, fmt.KIND_STORE, 1, 0, 0, (9).to_bytes(4, "little")),
        enc(4, 400, fmt.KIND_RESET, 0, 0, 0, b""),
    ]


def write(path: pathlib.Path, *chunks: bytes, version: int = fmt.VERSION) -> None:
    path.write_bytes(fmt.header_bytes({"created_by": "test"}, version=version) + b"".join(chunks))


def test_round_trip(tmp_path):
    f = tmp_path / "a.kvrec"
    write(f, *_records())
    rec = fmt.read(f)
    assert rec.damage.note() == "" and rec.header.version == fmt.VERSION == 2
    assert rec.header.meta["created_by"] == "test"
    mark, step, hot, store, reset = rec.records
    assert mark.meta == {"mark": "start", "device": "t", "telemetry": TELEMETRY}
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


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("cut", [1, 5, 8, 20])
def test_torn_last_record_is_skipped_and_said(tmp_path, version, cut):
    records = _records(version)
    f = tmp_path / "torn.kvrec"
    write(f, *records[:-1], records[-1][:cut], version=version)
    rec = fmt.read(f)
    assert len(rec.records) == len(records) - 1
    assert (rec.damage.skipped, rec.damage.places, rec.damage.at_end) == (cut, 1, cut)
    assert f"the last {cut} are a record cut short" in rec.damage.note()


@pytest.mark.parametrize("version", [1, 2])
def test_a_damaged_record_is_skipped_and_reading_goes_on(tmp_path, version):
    """Issue 23 (1): readers stopped at the first bad record."""
    records = _records(version)
    bad = bytearray(records[2])
    bad[-1] ^= 0xFF
    f = tmp_path / "bad.kvrec"
    write(f, records[0], records[1], bytes(bad), records[3], records[4], version=version)
    rec = fmt.read(f)
    assert [r.name for r in rec.records] == ["mark", "STEP", "store", "reset"]
    assert (rec.damage.skipped, rec.damage.places) == (len(bad), 1)
    assert rec.damage.note() == f"skipped {len(bad)} bytes in 1 place"


@pytest.mark.parametrize("version", [1, 2])
def test_every_single_byte_flip_loses_at_most_its_record(tmp_path, version):
    """A flipped byte anywhere after the magic costs the record it hits
    (and the damaged header's metadata, for a flip there), never the rest:
    with version 1 before resynchronising, 1,014 of 2,438 flips left
    nothing to replay."""
    records = _records(version) * 2
    head = fmt.header_bytes({"created_by": "test"}, version=version)
    clean = head + b"".join(records)
    f = tmp_path / "flip.kvrec"
    ends = [len(head)]
    for r in records:
        ends.append(ends[-1] + len(r))
    for pos in range(len(fmt.MAGIC) + 2, len(clean)):  # the magic and version bytes: not a recording
        data = bytearray(clean)
        data[pos] ^= 0x5A
        f.write_bytes(bytes(data))
        try:
            rec = fmt.read(f)
        except fmt.FormatError:
            assert pos < fmt.HEADER.size
            continue
        hit = next((i for i in range(len(records)) if ends[i] <= pos < ends[i + 1]), None)
        want = len(records) - (hit is not None)
        if pos < len(head) and version == 1:  # v1 has no sync word: the damaged header's tail
            want = min(want, len(rec.records))  # may hide the first record; never more
            assert len(rec.records) >= len(records) - 1, pos
        assert len(rec.records) == want, (pos, rec.damage)
        assert rec.damage.skipped or len(rec.records) == len(records)


def test_version_1_is_read(tmp_path):
    f = tmp_path / "v1.kvrec"
    write(f, *_records(1), version=1)
    rec = fmt.read(f)
    assert rec.header.version == 1 and [r.name for r in rec.records] == ["mark", "STEP", "HOT", "store", "reset"]


def test_not_a_recording_and_other_versions(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello world, not ours at all............")
    with pytest.raises(fmt.FormatError, match="bad magic"):
        fmt.read(f)
    head = bytearray(fmt.header_bytes())
    head[8:10] = (3).to_bytes(2, "little")
    f.write_bytes(bytes(head))
    with pytest.raises(fmt.FormatError, match="version 3"):
        fmt.read(f)


def test_special_files_are_refused_not_waited_on(tmp_path):
    """Issue 23 (8): `kvctl log` on a FIFO waited forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, pathlib.Path("/dev/zero"), tmp_path):
        result: list[object] = []
        t = threading.Thread(target=lambda p=path, out=result: out.append(_refusal(p)), daemon=True)
        t.start()
        t.join(5)
        assert result and "not a regular file" in str(result[0]), path


def _refusal(path: pathlib.Path) -> object:
    try:
        fmt.Reader(path)
    except (fmt.FormatError, OSError) as exc:
        return exc
    return None


@pytest.mark.parametrize("case", IMPOSSIBLE)
def test_a_record_no_writer_produces_is_skipped_and_counted(tmp_path, case):
    """Issue 23 (7)."""
    f = tmp_path / "odd.kvrec"
    records = _records()
    write(f, records[0], fmt.frame(IMPOSSIBLE[case]), records[1])
    rec = fmt.read(f)
    assert [r.name for r in rec.records] == ["mark", "STEP"]
    assert (rec.damage.invalid, rec.damage.places) == (1, 1)
    assert "1 record of them with contents no writer produces" in rec.damage.note()


def test_what_a_record_shows_is_escaped():
    r = fmt.decode_body(body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, data=abi.STEP_INFO.codec.pack(1),
                              comm=b"\x1b[2Jevil\n"))
    line = fmt.describe(r)
    assert "\x1b" not in line and "\n" not in line and "\\x1b[2Jevil\\n" in line


def test_resynchronising_is_bounded_on_a_file_built_against_it(tmp_path):
    """Frames that check, each claiming the longest body, one after another:
    searching past each would cost the whole file per byte."""
    head = fmt.SYNC + fmt.MAX_BODY.to_bytes(4, "little") + bytes(4)
    f = tmp_path / "evil.kvrec"
    write(f, (head + zlib.crc32(head).to_bytes(4, "little")) * 100_000)
    t0 = time.monotonic()
    rec = fmt.read(f)
    assert time.monotonic() - t0 < 10
    assert rec.records == [] and rec.damage.gave_up_at is not None
    assert "the rest was not read" in rec.damage.note()


# -- the recorder's paths -------------------------------------------------------


@pytest.fixture
def recdir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the daemon's path checks are root's")
    d = tmp_path / "rec"
    d.mkdir(mode=0o755)
    return d


def _append(path: pathlib.Path, *chunks: bytes) -> None:
    from kvcpu_dev.bench.recorder import open_recording

    fd = open_recording(path).keep()
    for chunk in chunks:
        os.write(fd, chunk)
    os.close(fd)


def test_open_new_then_append_after_a_torn_tail_cuts_nothing(recdir):
    """Issue 23 (1): appending truncated the file at its first bad byte."""
    path = recdir / "r.kvrec"
    records = _records()
    _append(path, records[1])
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "ab") as f:
        f.write(records[2][:10])  # a crash mid-write
    before = path.read_bytes()
    _append(path, records[4])
    after = path.read_bytes()
    assert after[:len(before)] == before
    rec = fmt.read(path)
    assert [r.name for r in rec.records] == ["STEP", "reset"]
    assert (rec.damage.skipped, rec.damage.places, rec.damage.at_end) == (10, 1, 0)


def test_append_after_damage_in_the_middle_keeps_every_good_record(recdir):
    path = recdir / "r.kvrec"
    records = _records()
    _append(path, *records * 50)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    _append(path, records[4])
    rec = fmt.read(path)
    assert bytes(data) == path.read_bytes()[:len(data)]
    assert len(rec.records) == 5 * 50 - 1 + 1 and rec.damage.places == 1


def test_an_empty_file_gets_a_header_and_version_1_is_not_appended_to(recdir):
    empty = recdir / "empty.kvrec"
    empty.touch(mode=0o600)
    _append(empty, _records()[1])
    assert [r.name for r in fmt.read(empty).records] == ["STEP"]
    old = recdir / "old.kvrec"
    write(old, *_records(1), version=1)
    os.chmod(old, 0o600)
    before = old.read_bytes()
    with pytest.raises(StartError, match="format version 1"):
        _append(old, _records()[1])
    assert old.read_bytes() == before


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


def test_a_failed_header_removes_only_the_file_it_created(recdir, monkeypatch):
    from kvcpu_dev.bench import recorder

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recorder, "_write_all", full)
    path = recdir / "r.kvrec"
    with pytest.raises(StartError, match="No space left") as refused:
        recorder.open_recording(path)
    assert refused.value.errno == errno.ENOSPC and not path.exists()


def test_a_caller_is_known_by_its_live_thread_or_refused():
    """A control acting for a caller reads the caller's groups from
    /proc/PID/status, and only while that thread has the request's ids."""
    from kvcpu_dev.safe_paths import who_called

    me = who_called(os.geteuid(), os.getegid(), os.getpid())
    assert me.groups == frozenset(os.getgroups())
    child = subprocess.Popen(["true"])
    child.wait()
    for uid, gid, pid in ((os.geteuid(), os.getegid(), 0), (os.geteuid() + 1, os.getegid(), os.getpid()),
                          (os.geteuid(), os.getegid() + 1, os.getpid()), (0, 0, child.pid)):
        with pytest.raises(StartError, match="refusing"):
            who_called(uid, gid, pid)


def test_mode_bits_as_the_kernel_picks_their_class():
    from kvcpu_dev.safe_paths import R_OK, W_OK, X_OK, Who, may

    def st(mode: int, uid: int = 10, gid: int = 20) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    owner, member, other = Who(10, 99, frozenset()), Who(11, 99, frozenset({20})), Who(12, 12, frozenset())
    assert not may(st(0o470), owner, W_OK)  # the owner's class, though the group's allows it
    assert may(st(0o470), member, R_OK | W_OK | X_OK) and not may(st(0o470), other, R_OK)
    assert may(st(0o007), other, W_OK | X_OK) and not may(st(0o007), member, X_OK)


def test_a_caller_s_path_has_no_dots(recdir):
    from kvcpu_dev.safe_paths import Who, caller_dir

    for path in (pathlib.Path("rel"), recdir / ".." / "rec"):
        with pytest.raises(StartError, match="without . or .."):
            caller_dir(path, Who(65534, 65534, frozenset()))


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
