"""The pytest plugin as a runtime's test suite uses it: the example of
docs/bench.md run by pytester in a child pytest, which finds the plugin
through its pytest11 entry point."""

from __future__ import annotations

import os
import pathlib
import re

import pytest

pytestmark = pytest.mark.live
pytest_plugins = ["pytester"]

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "bench.md"


def _example(name: str) -> str:
    """A fenced python block of docs/bench.md that starts with ``# name``."""
    block: str
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(f"# {name}\n"):
            return block
    raise AssertionError(f"docs/bench.md has no python block starting '# {name}'")


def test_documented_example_passes(pytester, tmp_path):
    pytester.makepyfile(kvruntime=_example("kvruntime.py"), test_kvruntime=_example("test_kvruntime.py"))
    transport = os.environ.get("KVCPU_TEST_TRANSPORT", "fuse")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--kvcpu-transport", transport,
                                           f"--basetemp={tmp_path / 'inner'}")
    result.assert_outcomes(passed=3)
    mounts = pathlib.Path("/proc/self/mountinfo").read_text()
    assert "kvpt" not in mounts  # every private device stopped and unmounted


def test_fixture_failure_modes(pytester, tmp_path):
    """A failing test still stops its device; fault() refuses a bad rule."""
    pytester.makepyfile(test_x="""
        import pytest

        def test_fails(kvcpu_device):
            assert kvcpu_device.telemetry()["step_count"] == 0
            assert False, "on purpose"

        def test_bad_rule(kvcpu_device):
            with pytest.raises(ValueError, match="unknown command"):
                kvcpu_device.fault("NOPE", errno="EIO")
            assert kvcpu_device.commands() == []  # nothing sent yet
    """)
    transport = os.environ.get("KVCPU_TEST_TRANSPORT", "fuse")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--kvcpu-transport", transport,
                                           f"--basetemp={tmp_path / 'inner'}")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("passed")) == (1, 1)
    assert "on purpose" in result.stdout.str()
    assert "kvpt" not in pathlib.Path("/proc/self/mountinfo").read_text()
