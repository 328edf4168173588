"""Every reader of a recording or a trace, fuzzed (issue 23: 7, 8):
`kvctl log` (text and --json), `kvctl replay --model`, `kvcpu-eval` on a
recording and on a trace, fed recordings with valid-CRC records of random
bodies and extreme numbers, marks of random JSON, traces of hostile JSON,
special files and extreme option values.  Each run ends with exit 0, or
with a one-line error (exit 1; a bad option value: click's usage error,
exit 2), never a traceback; in bounded time, and, run as a process on
large or endless input, in bounded memory.  `kvctl replay` against a node
is fuzzed the same way in tests/live/test_fuzz.py."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import recfuzz
from click.testing import CliRunner

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.bench import replay
from kvcpu_dev.device import abi
from kvcpu_dev.evaluation.cli import main as eval_main
from kvctl.cli import main as kvctl_main

BIN = pathlib.Path(sys.executable).parent
SEEDS = range(24)


def kvctl(*args: str) -> tuple[int, str, str]:
    """kvctl in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            kvctl_main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def kvcpu_eval(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(eval_main, [*args, "--no-progress"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback: the test fails with it
    return r.exit_code, r.stdout, r.stderr


def one_line_or_ok(code: int, err: str, what: object) -> None:
    assert "Traceback" not in err, what
    if code == 0:
        return
    assert code == 1, (what, code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("kvctl: ", "replay: ", "Error: ")), (what, err)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seed", SEEDS)
def test_recording_readers(tmp_path, seed, version):
    rng = random.Random(seed * 7 + version)
    f = tmp_path / "fz.kvrec"
    f.write_bytes(recfuzz.recording(rng, version=version))
    for args in (["log", str(f)], ["log", "--json", str(f)], ["log", "--kind", "HOT", str(f)],
                 ["replay", "--model", "--json", str(f)]):
        t0 = time.monotonic()
        code, out, err = kvctl(*args)
        assert time.monotonic() - t0 < 20, (seed, args)
        one_line_or_ok(code, err, (seed, args))
        if code == 0:  # whatever was skipped is said, in one line (and replay's note on resets)
            said = [line for line in err.splitlines() if not line.startswith("kvctl: note: ")]
            assert len(said) <= 1 and all(" skipped " in line for line in said), (seed, err)
    t0 = time.monotonic()
    code, out, err = kvcpu_eval("--recording", str(f), "--capacity-blocks", "1,50%,hbm", "--json")
    assert time.monotonic() - t0 < 60, seed
    one_line_or_ok(code, err, (seed, "kvcpu-eval"))


@pytest.mark.parametrize("seed", SEEDS)
def test_trace_reader(tmp_path, seed):
    rng = random.Random(seed)
    f = tmp_path / "fz.jsonl"
    f.write_bytes(recfuzz.trace(rng))
    code, out, err = kvcpu_eval(str(f), "--capacity-blocks", "1,50%", "--policies",
                                "lru,arc,prio-lru,belady,hepc", "--json")
    one_line_or_ok(code, err, seed)


@pytest.mark.parametrize("line, why", [
    ('{"hash_ids": [9223372036854775808]}', "hash_ids must be a list of integers from 0"),
    ('{"hash_ids": [-1]}', "hash_ids must be a list of integers from 0"),
    ('{"timestamp": NaN, "hash_ids": [1]}', "timestamp must be a finite number"),
    ('{"timestamp": Infinity, "hash_ids": [1]}', "timestamp must be a finite number"),
    ('{"input_length": 1e400, "hash_ids": [1]}', "input_length must be a whole number"),
    ('{"output_length": -3, "hash_ids": [1]}', "output_length must be a whole number"),
    ("[" * 100000, "nested too deeply"),
    ('"a string"', "a request must be a JSON object"),
])
def test_a_bad_trace_value_is_one_line_naming_its_line(tmp_path, line, why):
    """Issue 23 (8): hash ids >= 2^63 and NaN timestamps gave tracebacks."""
    f = tmp_path / "bad.jsonl"
    f.write_text('{"hash_ids": [1, 2]}\n' + line + "\n")
    code, out, err = kvcpu_eval(str(f), "--capacity-blocks", "1")
    assert code == 1 and err.count("\n") == 1 and f"{f}:2: " in err and why in err, err


def test_a_valid_trace_of_extreme_but_legal_numbers(tmp_path):
    f = tmp_path / "edge.jsonl"
    f.write_text('{"timestamp": 1e15, "input_length": 2147483647, "output_length": 0, '
                 '"hash_ids": [0, 9223372036854775807, 0]}\n{"hash_ids": []}\n')
    code, out, err = kvcpu_eval(str(f), "--capacity-blocks", "1", "--policies", "lru,belady", "--json")
    assert code == 0, err


@pytest.mark.parametrize("option, value", [
    ("--block-mib", "0"), ("--block-mib", "-1"), ("--block-mib", "inf"), ("--block-mib", "nan"),
    ("--block-mib", "1e30"), ("--block-mib", "1e-30"), ("--capacity-blocks", "0"), ("--capacity-blocks", "-5"),
    ("--capacity-blocks", "inf%"), ("--capacity-blocks", "nan%"), ("--capacity-blocks", "1e400"),
    ("--capacity-blocks", "99999999999999999999"), ("--capacity-blocks", ","), ("--capacity-blocks", "\u0663"),
    ("--requests", "0"), ("--requests", "-1"), ("--train-fraction", "nan"), ("--train-fraction", "1"),
    ("--jobs", "0"), ("--jobs", "1000000000"), ("--budget", "0"), ("--hepc-set", "max_batch=0"),
    ("--hepc-set", "w_r=1e400"), ("--hepc-set", "step_period=NaN"), ("--hepc-set", "lookahead=" + "[" * 5000),
    ("--hepc-set", "w_r=[1]"), ("--hepc-set", "nope=1"),
])
def test_extreme_option_values(tmp_path, option, value):
    """Issue 23 (8): --block-mib inf gave a traceback and 0 was accepted."""
    from evalkit import synthetic, write_jsonl

    f = write_jsonl(tmp_path / "t.jsonl", synthetic(20))
    extra = ["--tune"] if option in ("--train-fraction", "--budget") else []
    code, out, err = kvcpu_eval(str(f), option, value, "--policies", "lru", *extra)
    assert code in (1, 2) and "Traceback" not in err, (code, err)
    assert err.strip().splitlines()[-1].startswith("Error: "), err


def test_a_recording_with_extreme_block_mib(tmp_path):
    f = tmp_path / "r.kvrec"
    f.write_bytes(recfuzz.recording(random.Random(3)))
    for value in ("0", "inf", "nan", "-2"):
        code, out, err = kvcpu_eval("--recording", str(f), "--block-mib", value)
        assert code == 2 and "Traceback" not in err and "--block-mib" in err, (value, err)


def test_a_replay_never_waits_years_or_overflows(monkeypatch):
    """Issue 23 (8): a 2^63 ns gap between two records raised OverflowError."""
    slept: list[float] = []
    monkeypatch.setattr("kvcpu_dev.bench.replay.time.sleep", slept.append)
    res = replay.Result()
    pace = replay._Pace(1.0, res)
    for t in (0, 2**63, 2**63 + 1_000_000_000, 2**64 - 1, 5):
        pace.wait(t)
    assert slept == [replay.MAX_PAUSE_S] * 3 and res.pauses_cut == 3  # no time passed: +1 s is cut too


# -- as processes: special files, endless and large input -------------------------------


#: Runs its arguments as a child and prints the child's peak RSS (KiB) last
#: on stderr: forked from this small process, not from pytest, whose
#: resident pages a child counts until it execs.
_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


def run_limited(argv: list[str], timeout: float = 60) -> tuple[int, str, int, float]:
    """(exit status, stderr, its peak RSS in MB, seconds) of a command."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{argv} did not finish in {timeout} s")
    err, _, rss_kb = stderr.rstrip("\n").rpartition("\n")
    return proc.returncode, err + "\n" if err else "", int(rss_kb) // 1024, time.monotonic() - t0


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null", "dir"])
@pytest.mark.parametrize("command", [["kvctl", "log"], ["kvctl", "replay", "--model"], ["kvcpu-eval"],
                                     ["kvcpu-eval", "--recording"]])
def test_special_files_are_one_line(request, tmp_path, special, command):
    """Issue 23 (8): kvcpu-eval /dev/zero grew ~340 MB/s to a MemoryError
    traceback; kvctl log on a FIFO waited forever."""
    path = {"fifo": lambda: request.getfixturevalue("fifo"), "dir": lambda: tmp_path}.get(
        special, lambda: pathlib.Path(special))()
    argv = [str(BIN / command[0]), *command[1:], str(path)]
    code, err, _, seconds = run_limited(argv, timeout=30)
    assert code in (1, 2) and "Traceback" not in err and seconds < 30, err
    assert err.strip().splitlines()[-1].startswith(("kvctl: ", "Error: ")), err


def test_a_large_recording_is_read_in_bounded_memory(tmp_path):
    """Issue 23 (8): a reader held the whole file, about 7x its size."""
    rec = fmt.encode(1, 1, fmt.KIND_IOCTL, fmt.command_number("STEP"), 1, 0, (7).to_bytes(8, "little"),
                     ((1, 0x100, 7),), comm=b"vllm")
    f = tmp_path / "big.kvrec"
    with open(f, "wb") as out:
        out.write(fmt.header_bytes())
        for _ in range(36):
            out.write(rec * 4000)  # 144,000 records: 12.7 MB, as in the issue
    code, err, rss_mb, _ = run_limited([str(BIN / "kvctl"), "log", str(f)], timeout=300)
    assert code == 0 and err == "" and rss_mb < 60, (code, err, rss_mb)


def test_endless_lines_and_hints_over_the_address_space(tmp_path):
    """A trace of one 2 GB line would be read whole; a 905-byte recording
    whose HOT hints spanned 2^20 blocks each took 1.2 GB and 162 s."""
    line = tmp_path / "line.jsonl"
    with open(line, "wb") as out:
        out.truncate(2 << 30)  # sparse: 2 GB of NULs, no newline
    code, err, rss_mb, _ = run_limited([str(BIN / "kvcpu-eval"), str(line), "--no-progress"])
    assert code == 1 and "a line longer than" in err and rss_mb < 200, (err, rss_mb)
    hints = tmp_path / "hints.kvrec"
    start = fmt.mark("start", device="x", telemetry=dict.fromkeys(abi.TELEMETRY_FIELDS, 0))
    body = [fmt.encode(i, i, fmt.KIND_IOCTL, fmt.command_number("HOT"), 1, 0,
                       abi.BLOCK_INFO.codec.pack(0, 2**41, 0), ((i, 0x200, 0), (i, 0x208, 2**41)))
            for i in range(9)]
    hints.write_bytes(fmt.header_bytes() + start + b"".join(body))
    code, err, rss_mb, seconds = run_limited([str(BIN / "kvcpu-eval"), str(hints), "--no-progress"])
    assert "Traceback" not in err and rss_mb < 400 and seconds < 60, (code, err, rss_mb, seconds)


def test_a_file_built_against_resynchronising(tmp_path):
    f = tmp_path / "evil.kvrec"
    f.write_bytes(fmt.header_bytes() + recfuzz.bogus_frames(400_000))
    code, err, rss_mb, seconds = run_limited([str(BIN / "kvctl"), "log", str(f)], timeout=60)
    assert code == 0 and "the rest was not read" in err and seconds < 30 and rss_mb < 120, (err, seconds)
