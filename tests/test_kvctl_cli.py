"""kvctl's messages that need no device: a usage problem named on one line
before the reference tool's usage (issue 22), and the hint after a failed
open.  In process: main() as the console script runs it."""

from __future__ import annotations

import os
import re

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


def _commands():
    """Every kvctl command beyond the reference five, with its click command:
    ("weights", cmd), ("fault add", cmd), ..."""
    import click

    from kvctl import group

    ctx = click.Context(group.cli)
    for name in group.cli.list_commands(ctx):
        command = group.cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            sub = click.Context(command, parent=ctx)
            for subname in command.list_commands(sub):
                yield f"{name} {subname}", command.get_command(sub, subname)
        else:
            yield name, command


def _spec(line: str) -> list[str]:
    """A usage line's command words, before its description: "fault list | clear" -> fault list clear."""
    return re.sub(r"[][|]", " ", re.split(r"\s{2,}", line.strip())[0]).split()


def test_the_usage_names_every_command_and_option():
    """What kvctl --help prints is all there is (issue 22: weights --json,
    blocks --va, log --kind were missing)."""
    import click

    lines = cli.USAGE.splitlines()[1:]
    seen = []
    for name, command in _commands():
        first, *rest = name.split()
        mine = [line for line in lines if (words := _spec(line))
                and (words[0] == first or (not rest and first in words and "|" in line))
                and all(w in words for w in rest)]
        assert mine, f"kvctl {name} is not in the usage"
        options = [opt for p in command.params if isinstance(p, click.Option) for opt in p.opts
                   if opt.startswith("--")]
        for opt in options:
            assert any(opt in line for line in mine), f"kvctl {name} {opt} is not in the usage"
        seen.append(name)
    assert {"weights", "blocks", "log", "fault add", "top", "replay", "reset", "unplug"} <= set(seen)
