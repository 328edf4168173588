"""kvctl's messages that need no device: a usage problem named on one line
before the reference tool's usage (issue 22), and the hint after a failed
open.  In process: main() as the console script runs it."""

from __future__ import annotations

import os

import pytest

from kvctl import cli


def kvctl(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize("args, problem", [
    (["step", "abc"], "kvctl: step <n>: not a number: 'abc'"),
    (["step"], "kvctl: step takes 1 number (<n>), got 0"),
    (["step", "1", "2"], "kvctl: step takes 1 number (<n>), got 2"),
    (["step", "99999999999999999999"], "kvctl: step <n>: out of range: '99999999999999999999'"),
    (["step", "12abc"], "kvctl: step <n>: trailing characters in '12abc'"),
    (["prefetch", "1", "2", "x"], "kvctl: prefetch <step>: not a number: 'x'"),
    (["hot", "1"], "kvctl: hot takes 2 numbers (<va> <len>), got 1"),
    (["bogus"], "kvctl: no such command 'bogus'"),
    ([], "kvctl: no command given"),
    (["--device"], "kvctl: --device needs a PATH"),
    (["telemetry", "--bogus"], "kvctl: telemetry: no such option '--bogus'"),
    (["fault"], "kvctl: fault: which one? add, clear, del, list"),
    (["fault", "add"], "kvctl: fault add: missing argument 'CMD'"),
], ids=repr)
def test_a_usage_problem_is_named_before_the_usage(capsys, args, problem):
    code, out, err = kvctl(capsys, "--device", "/nonexistent/kv", *args) if args != ["--device"] \
        else kvctl(capsys, *args)
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[0] == problem
    assert "\n".join(lines[1:]) == cli.USAGE  # the reference tool's usage text, unchanged


def test_help_is_the_usage_alone(capsys):
    assert kvctl(capsys, "--help") == (0, cli.USAGE + "\n", "")


def test_a_missing_node_gets_a_hint_after_the_reference_line(capsys, tmp_path):
    node = tmp_path / "kvcpu7"
    code, out, err = kvctl(capsys, "--device", str(node), "telemetry")
    first, hint = err.splitlines()
    assert (code, out) == (1, "")
    assert first == f"open {node}: No such file or directory"  # the reference's line, first and whole
    assert f"'kvcpu-dev --mock --name kvcpu7 --dev-dir {tmp_path}'" in hint
    # the reference commands get it too, after the same line
    code, _, err = kvctl(capsys, "--device", str(node), "step", "1")
    assert code == 1 and err.splitlines() == [first, hint]


def test_the_default_node_hint_is_the_two_word_start(capsys, monkeypatch):
    monkeypatch.setenv("KVCPU_DEVICE", "/dev/kvcpu0")
    if os.path.lexists("/dev/kvcpu0"):
        pytest.skip("a kvcpu0 runs on this machine")
    _, _, err = kvctl(capsys, "telemetry")
    assert err.splitlines()[1].startswith("kvctl: no device there; start one with 'kvcpu-dev --mock' (as root)")


def test_a_dangling_link_names_the_stop_that_removes_it(capsys, tmp_path):
    node = tmp_path / "dev" / "kvt9"
    node.parent.mkdir()
    node.symlink_to(tmp_path / "run" / "kvt9" / "device")
    _, _, err = kvctl(capsys, "--device", str(node), "telemetry")
    hint = err.splitlines()[1]
    assert "its daemon ended uncleanly" in hint
    assert f"'kvcpu-dev --stop --name kvt9 --dev-dir {node.parent} --run-dir {tmp_path / 'run'}'" in hint


def test_attribute_commands_without_a_daemon_get_the_hint(capsys, tmp_path):
    node = tmp_path / f"kvtnone{os.getpid()}"  # no daemon has this name, nor its attribute directory
    for args in (["stats"], ["fault", "list"], ["reset"], ["top", "--once"]):
        code, _, err = kvctl(capsys, "--device", str(node), *args)
        lines = err.splitlines()
        assert code == 1 and len(lines) == 2, (args, err)
        assert lines[1].startswith("kvctl: no device there; start one with 'kvcpu-dev --mock"), args
