"""An injected latency delays the request it was injected into, and
nothing else: other clients, --request-timeout and --stop see a device
that works (the reliability issue's items 2, 3 and 4, as its users hit
them)."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest
from kvspec import STEP

pytestmark = pytest.mark.live

#: A stop that waits for nothing (it took 10 s when the helper waited on the
#: daemon it was stopping; see each test).
QUICK_STOP_S = 3.0


def add_fault(dev, rule: str) -> None:
    assert dev.write_attr("faults", f"add {rule}\n".encode()) == 0


def telemetry_in_background(dev) -> subprocess.Popen:
    """A client whose GET_TELEMETRY an injected latency holds back."""
    code = ("import fcntl, os, sys\n"
            f"fd = os.open({str(dev.node)!r}, os.O_RDWR)\n"
            "buf = bytearray(96)\n"
            f"fcntl.ioctl(fd, {0x80604B07}, buf)\n"
            "print('answered')\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def step_times(dev, count: int, gap_s: float) -> list[float]:
    times = []
    for n in range(count):
        t0 = time.monotonic()
        dev.ioctl(STEP, struct.pack("<Q", n))
        times.append(time.monotonic() - t0)
        time.sleep(gap_s)
    return times


def test_a_delayed_reply_stalls_no_other_client(dev):
    add_fault(dev, "cmd=TELEMETRY latency=2s count=1")
    slow = telemetry_in_background(dev)
    try:
        time.sleep(0.2)  # the telemetry request is being held
        times = step_times(dev, 20, 0.01)
        assert slow.poll() is None, "the delayed reply came early"
        out, _ = slow.communicate(timeout=10)
    finally:
        slow.kill()
    assert out.strip() == "answered"
    assert max(times) < 0.5, f"a STEP waited {max(times):.2f} s behind another client's latency"


def test_stop_during_a_long_latency_is_quick_and_the_client_gets_its_answer(dev):
    add_fault(dev, "cmd=TELEMETRY latency=10s count=1")
    slow = telemetry_in_background(dev)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        result = dev.stop()
        took = time.monotonic() - t0
        out, _ = slow.communicate(timeout=10)
    finally:
        slow.kill()
    assert result.returncode == 0, result.stderr
    # A stop that waited for the latency would take 9.7 s; a quick one takes
    # 0.2-0.5 s on the host and up to 1.8 s under UML (1 of 5 over 1.5 s
    # there, on this tree and on the one before the watcher's changes).
    assert took < QUICK_STOP_S, f"--stop took {took:.1f} s"
    assert out.strip() == "answered"  # the command ran; its reply was only held back


def test_request_timeout_does_not_take_down_a_device_for_its_own_latency(daemons):
    """A latency the device injected is not a frozen daemon: the request
    is answered, the connection stays, every later command works."""
    dev = daemons("--request-timeout", "1")
    add_fault(dev, "cmd=STEP latency=3s count=1")
    t0 = time.monotonic()
    dev.step(1)  # held 3 s, answered
    assert time.monotonic() - t0 >= 2.9
    dev.step(2)
    assert dev.telemetry()["step_count"] == 2


@pytest.mark.parametrize("extra", [["--seccomp"], ["--runas", "nobody"]], ids=["seccomp", "runas"])
def test_stop_with_the_helper_after_a_look_at_the_attributes_is_quick(open_dir, daemons, extra):
    """The helper never touches a path inside the daemon's own mounts: the
    daemon, stopping, no longer answers them."""
    dev = daemons(*extra, base_dir=open_dir / "d")
    subprocess.run(["ls", str(dev.attr_dir)], check=True, capture_output=True)
    t0 = time.monotonic()
    result = dev.stop()
    took = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert took < QUICK_STOP_S, f"--stop took {took:.1f} s: {result.stderr}"
