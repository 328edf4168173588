"""Starting, stopping, killing and restarting the daemon, as an operator
and as a crashing client would."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import subprocess
import time

import pytest
from kvspec import COUNTERS, DEFAULTS, TELEMETRY

from live.harness import (
    KVCPU_DEV,
    CClient,
    Daemon,
    FcntlClient,
    alive,
    errno_of,
    mount_points,
    mounted,
    wait_until,
)

pytestmark = pytest.mark.live


def assert_gone(d, pid: int) -> None:
    """Nothing of daemon ``d`` (pid ``pid``) is left."""
    assert not alive(pid), "the daemon still runs"
    assert not mounted(d.attr_dir), "the attribute directory is still mounted"
    assert not d.link.exists() and not d.link.is_symlink(), "the node link is still there"
    assert not d.node.exists(), "the node is still there"
    assert not d.pid_file.exists(), "the pid file is still there"


def assert_no_internal_errors(d) -> None:
    log = d.log()
    assert "Traceback" not in log and "internal error" not in log, log


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]


def test_start_returns_with_a_usable_node(daemons):
    d = daemons(start=False)
    started = time.monotonic()
    result = d.start()
    elapsed = time.monotonic() - started
    assert d.telemetry() == DEFAULTS  # at once: no waiting, no retry
    assert d.attr("w_d") == "200\n"
    assert d.name in one_line(result.stdout) and result.stderr == ""
    assert alive(d.pid)
    assert mounted(d.attr_dir)
    if d.transport != "cuse":  # the device file, over /dev/fuse or io_uring
        assert os.readlink(d.link) == str(d.attr_dir / "device")
        assert stat.S_ISREG(os.stat(d.node).st_mode)
    else:
        assert stat.S_ISCHR(os.stat(d.node).st_mode)
    assert stat.S_IMODE(os.stat(d.node).st_mode) == 0o600  # the default, as the driver
    assert elapsed < 10


def test_the_starting_command_leaves_the_daemon_s_imports_to_the_daemon(daemons, monkeypatch):
    """trio, numpy, cffi and the model are most of a start's time: the
    command that forks the daemon and waits must not load them too (and
    then tear them down); the daemon, after the fork, does."""
    d = daemons(start=False)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the parent's imports, on its stderr
    result = d.start()
    parent = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
    assert "click" in parent and "kvcpu_dev.daemon.background" in parent, "no import profile of the command"
    assert not parent & {"numpy", "trio", "cffi", "kvcpu_dev.model", "kvcpu_dev.daemon.serve"}
    assert d.telemetry() == DEFAULTS
    assert "steps=0" in d.attr("model_stats")  # the daemon built the model


def test_stop_removes_everything_and_a_restart_is_fresh(dev):
    dev.step(9)
    pid = dev.pid
    result = dev.stop()
    assert result.returncode == 0, result.stderr
    assert dev.name in one_line(result.stdout)
    assert_gone(dev, pid)
    assert_no_internal_errors(dev)
    dev.start()
    assert dev.telemetry() == DEFAULTS


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_shuts_down_cleanly(dev, signum):
    pid = dev.pid
    os.kill(pid, signum)
    assert wait_until(lambda: not alive(pid))
    assert_gone(dev, pid)


def test_stop_when_not_running(daemons):
    d = daemons(start=False)
    result = d.stop()
    assert result.returncode == 1
    assert d.name in one_line(result.stderr)


def kill9(d: Daemon) -> int:
    """SIGKILL the daemon; wait until it is dead and, best effort, reaped
    (whoever adopted it may be slow to collect the zombie)."""
    pid = d.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(pid))
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5)
    return pid


def test_stop_after_a_crash_does_not_signal_a_reused_pid(dev):
    """After kill -9 the pid file stays; once the kernel hands that pid to
    another process, --stop must not signal it (the daemon holds an flock on
    RUN_DIR/NAME.lock for its lifetime: that, not the pid, says it runs)."""
    kill9(dev)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        dev.pid_file.write_text(f"{bystander.pid}\n")  # what pid reuse looks like
        result = dev.stop()
        time.sleep(0.2)  # no condition to wait on: a stray signal would have landed by now
        assert bystander.poll() is None, "kvcpu-dev --stop killed an unrelated process"
        assert result.returncode == 1 and "not running" in one_line(result.stderr)
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_after_a_crash_cleans_up_everything(dev):
    """--stop on a crashed daemon says it is not running and cleans up, as
    the next start would: not just the dead mount, the link and pid file too."""
    pid = kill9(dev)
    result = dev.stop()
    assert result.returncode == 1 and "not running" in one_line(result.stderr)
    assert_gone(dev, pid)


def test_stop_while_a_client_holds_the_node_open(dev):
    fd = dev.open()
    try:
        pid = dev.pid
        result = dev.stop()
        assert result.returncode == 0, result.stderr
        assert_gone(dev, pid)
        code = errno_of(fcntl.ioctl, fd, TELEMETRY, bytearray(96))
        gone: tuple[int, ...] = (errno.ENOTCONN, errno.ENODEV, errno.EIO)
        if dev.transport == "uring":  # its queues are torn down by aborting the connection
            gone += (errno.ECONNABORTED,)
        assert code in gone, os.strerror(code)
    finally:
        os.close(fd)


def test_kill9_then_restart(dev):
    dev.step(5)
    pid = kill9(dev)
    assert not dev.answers()
    assert dev.link.is_symlink(), "a killed daemon leaves its link behind"
    assert mounted(dev.attr_dir), "a killed daemon leaves its (dead) mount behind"
    dev.start()
    assert dev.pid != pid
    assert dev.telemetry() == DEFAULTS
    assert mount_points().count(str(dev.attr_dir)) == 1, "the stale mount is still stacked"
    assert dev.attr("current_step") == "0\n"


def test_second_start_is_refused_and_the_first_keeps_working(dev):
    dev.step(7)
    pid = dev.pid
    result = dev.start(check=False)
    assert result.returncode == 1 and result.stdout == ""
    message = one_line(result.stderr)
    assert dev.name in message and "already running" in message
    assert dev.pid == pid
    assert dev.telemetry()["current_step"] == 7
    dev.step(8)
    assert dev.telemetry()["step_count"] == 2


def test_two_names_side_by_side(daemons, tmp_path):
    a = daemons(base_dir=tmp_path / "both")
    b = daemons(base_dir=tmp_path / "both")
    a.step(11)
    client = FcntlClient(b.node)
    client.block("hot", 0xB000, 64, 0)
    client.close()
    assert a.telemetry() == DEFAULTS | dict(current_step=11, step_count=1, last_target_step=11)
    assert b.telemetry() == DEFAULTS | dict(hot_count=1, last_va=0xB000, last_len=64)
    b_before = b.telemetry()
    pid = a.pid
    assert a.stop().returncode == 0
    assert_gone(a, pid)
    assert b.telemetry() == b_before


def test_client_killed_mid_loop_does_not_hurt(dev, kvclient):
    proc = subprocess.Popen([str(kvclient), str(dev.node), "loop", str(10**9)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: dev.telemetry()["share_count"] > 50)
    finally:
        proc.kill()
        proc.wait()
    t = dev.telemetry()
    counts = [t[c] for c in COUNTERS]  # issued in this order, round and round
    assert counts == sorted(counts, reverse=True) and counts[0] - counts[-1] <= 1, counts
    assert CClient(dev.node, kvclient).run("loop", 50) == "done 50"
    after = dev.telemetry()
    assert [after[c] - t[c] for c in COUNTERS] == [10] * 5
    assert_no_internal_errors(dev)


def test_without_mock_exits_with_one_line(daemons):
    d = daemons(start=False)
    d.dev_dir.mkdir(parents=True)
    result = d.cli()
    assert result.returncode != 0 and result.stdout == ""
    assert "--mock" in one_line(result.stderr)
    assert not d.link.exists() and not d.link.is_symlink()
    assert not d.pid_file.exists()


@pytest.mark.parametrize("squatter", ["foreign-link", "regular-file"])
def test_refuses_a_node_path_that_is_not_ours(daemons, squatter):
    d = daemons(start=False)
    d.dev_dir.mkdir(parents=True)
    if squatter == "foreign-link":
        d.link.symlink_to("/dev/null")
    else:
        d.link.write_text("mine\n")
    result = d.start(check=False)
    assert result.returncode == 1
    assert str(d.link) in one_line(result.stderr)
    assert d.link.is_symlink() if squatter == "foreign-link" else d.link.read_text() == "mine\n"


def test_foreground(daemons):
    d = daemons(start=False)
    d.dev_dir.mkdir(parents=True)
    paths = ["--name", d.name, "--run-dir", str(d.run_dir), "--dev-dir", str(d.dev_dir)]
    proc = subprocess.Popen([KVCPU_DEV, "--mock", "--foreground", "--transport", d.transport,
                             *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d.pids.add(proc.pid)
    try:
        assert wait_until(d.answers), "the foreground daemon never answered"
        # The C fast path answers as soon as the kernel's INIT is done; the
        # pid file follows once Python has published the node.
        assert wait_until(d.pid_file.exists), "no pid file"
        assert d.pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert_gone(d, proc.pid)


@pytest.mark.parametrize("how", ["background", "foreground", "foreground --runas"])
@pytest.mark.parametrize("refusal", ["--record", "--metrics"])
def test_a_refused_start_leaves_no_directory_behind(daemons, tmp_path, how, refusal):
    """Refused once the mount point is made (a bad --record directory, a bad
    --metrics address): the one-line reason and exit 1, and nothing left
    but the log and lock files (issue 22: an empty RUN_DIR/N stayed)."""
    d = daemons(start=False)
    extra = ["--record", str(tmp_path / "no-such-dir" / "x.kvrec")] if refusal == "--record" \
        else ["--metrics", "nonsense"]
    if how != "background":
        extra += ["--foreground"]
    if how.endswith("--runas"):  # with the privileged helper, which also cleans up
        extra += ["--runas", "nobody"]
    result = d.start(*extra, check=False)
    assert result.returncode == 1
    assert ("no-such-dir" if refusal == "--record" else "--metrics nonsense") in one_line(result.stderr)
    assert wait_until(lambda: not d.attr_dir.exists(), timeout=5), f"{d.attr_dir} was left behind"
    assert not mounted(d.attr_dir)
    assert not d.link.is_symlink() and not d.pid_file.exists()
    assert {p.name for p in d.run_dir.iterdir()} <= {f"{d.name}.lock", f"{d.name}.log"}
