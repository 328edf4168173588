"""``kvcpu-dev run``'s command line, without a daemon: usage, help, one-line
failures and a light start (no trio, numpy, click or model imported)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kvcpu_dev.daemon import run

ENTRY = [sys.executable, "-m", "kvcpu_dev.daemon.entry"]


def test_parse_options_and_command():
    assert run.parse(["--device", "/dev/x", "--", "cmd", "--device", "y"]) == ("/dev/x", ["cmd", "--device", "y"])
    assert run.parse(["--name=kv9", "cmd"]) == ("/dev/kv9", ["cmd"])
    assert run.parse(["cmd", "-x"]) == (run.parse(["--", "cmd"])[0], ["cmd", "-x"])


@pytest.mark.parametrize("argv, message", [
    ([], "no command given"),
    (["--"], "no command given"),
    (["--name", "a/b", "cmd"], "invalid device name"),
    (["--name", "a", "--device", "/dev/b", "cmd"], "give one"),
    (["--bogus", "cmd"], "unknown option --bogus"),
    (["--device"], "--device needs a value"),
])
def test_usage_errors_exit_125(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.parse(argv)
    assert exc.value.code == run.CANNOT_START
    assert message in capsys.readouterr().err


def test_help_and_the_daemons_help_name_it():
    r = subprocess.run([*ENTRY, "run", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage: kvcpu-dev run") and "MADV_KV_PREFETCH" in r.stdout
    r = subprocess.run([*ENTRY, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "kvcpu-dev run [--name N | --device PATH] -- CMD" in " ".join(r.stdout.split())


def test_a_missing_node_is_one_line_and_the_start_is_light(tmp_path):
    marker = tmp_path / "ran"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "kvcpu_dev.daemon.entry", "run",
                        "--device", str(tmp_path / "nope"), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and not marker.exists()
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("import time:")]
    assert lines == [f"kvcpu-dev run: open {tmp_path / 'nope'}: No such file or directory"]
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("trio", "numpy", "click")}
    assert not {m for m in imported if m.startswith("kvcpu_dev.model")}
