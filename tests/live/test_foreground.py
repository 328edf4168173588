"""--foreground, as systemd (Type=notify) and containers run it: READY=1
once the node answers, STOPPING=1 and a clean exit 0 on SIGTERM, one log
line at start and one at stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from live.harness import KVCPU_DEV, mounted

pytestmark = pytest.mark.live


def test_foreground_notifies_ready_and_stops_cleanly_on_sigterm(daemons, tmp_path):
    d = daemons(start=False)
    d.dev_dir.mkdir(parents=True, exist_ok=True)
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(15)
        proc = subprocess.Popen(
            [KVCPU_DEV, "--mock", "--foreground", "--transport", d.transport,
             "--name", d.name, "--run-dir", str(d.run_dir), "--dev-dir", str(d.dev_dir)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        d.pids.add(proc.pid)
        try:
            ready = sock.recv(4096).decode()
            assert "READY=1" in ready and f"MAINPID={proc.pid}" in ready
            assert d.answers(), "READY=1 came before the node answered"
            d.step(7)
            proc.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in sock.recv(4096).decode()
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.stderr is not None  # stderr=PIPE
    err = proc.stderr.read()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "ready" in lines[0] and d.name in lines[0], err
    assert "stopped" in lines[-1] and "1 steps" in lines[-1], err
    assert "Traceback" not in err
    assert not mounted(d.attr_dir)
    assert not d.link.is_symlink() and not d.pid_file.exists()
