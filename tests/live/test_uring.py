"""The device file over FUSE io_uring (--transport uring), where this
kernel has it: one queue per CPU answers the callers running on that CPU,
the fuse module's enable_uring is switched on only when asked (and said
so), and every other live test runs on it too with
KVCPU_TEST_TRANSPORT=uring (.ci/run does)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess

import pytest

PARAM = pathlib.Path("/sys/module/fuse/parameters/enable_uring")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not PARAM.exists(), reason="this kernel has no FUSE over io_uring"),
    # A container sees the host's parameter through a read-only /sys: the
    # host decides there, and tests/test_uring_suite.py runs these on it.
    pytest.mark.skipif(PARAM.exists() and not os.access(PARAM, os.W_OK),
                       reason=f"known gap in a container: {PARAM} is the host's, read-only in here"),
]


@contextlib.contextmanager
def enable_uring(value: str):
    """The module parameter set to ``value`` for the test, as it was after."""
    before = PARAM.read_text().strip()
    PARAM.write_text(value + "\n")
    try:
        yield
    finally:
        PARAM.write_text(before + "\n")


@pytest.fixture(autouse=True)
def _parameter_as_it_was():
    """--transport uring leaves the parameter on (as a sysadmin's option
    would be): a test puts it back."""
    before = PARAM.read_text().strip()
    yield
    PARAM.write_text(before + "\n")


def fastpath(dev) -> dict[str, str]:
    return dict(line.split("=", 1) for line in dev.attr("fastpath").splitlines())


def test_each_cpu_s_callers_are_answered_by_that_cpu_s_queue(daemons, kvclient):
    dev = daemons("--transport", "uring")
    cpus = sorted(os.sched_getaffinity(0))
    before = [int(n) for n in fastpath(dev)["uring_queue_served"].split(",")]
    assert fastpath(dev)["transport"] == "uring" and len(before) == os.cpu_count()
    for cpu in cpus:
        subprocess.run(["taskset", "-c", str(cpu), str(kvclient), str(dev.node), "loop", "200"],
                       check=True, capture_output=True)
        after = [int(n) for n in fastpath(dev)["uring_queue_served"].split(",")]
        # the loop's 200 commands and its open/release: all on its CPU's queue
        grew = [a - b for a, b in zip(after, before)]
        assert grew[cpu] >= 200 and sum(grew) - grew[cpu] == 0, grew
        before = after
    assert dev.telemetry()["step_count"] == 40 * len(cpus)


def test_explicit_uring_switches_the_module_parameter_on_and_says_so(daemons):
    with enable_uring("N"):
        dev = daemons("--transport", "uring")
        assert PARAM.read_text().strip() == "Y"  # left on, as a modprobe option would be
        log = dev.log_file.read_text()
        assert f"switched {PARAM} to Y" in log
        assert "io_uring" in dev.log_file.read_text().splitlines()[-1]  # the ready line
        dev.step(3)
        assert dev.telemetry()["current_step"] == 3


def test_auto_takes_io_uring_only_when_it_is_already_on(daemons):
    with enable_uring("N"):
        classic = daemons("--transport", "auto")
        assert fastpath(classic)["transport"] == "fuse" and PARAM.read_text().strip() == "N"
    with enable_uring("Y"):
        ring = daemons("--transport", "auto")
        assert fastpath(ring)["transport"] == "uring"
