"""The live suite on the device file over FUSE io_uring: the same tests,
KVCPU_TEST_TRANSPORT=uring (every daemon started with --transport uring),
where this kernel has it.  The fuse module's enable_uring is put back as it
was.  With KVCPU_REQUIRE_URING (.ci/run) a kernel without it is a failure,
not a skip."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARAM = pathlib.Path("/sys/module/fuse/parameters/enable_uring")
INNER_TIMEOUT = 1200


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the live suite needs root"
    if not PARAM.exists():
        return f"this kernel has no FUSE over io_uring ({PARAM} is missing)"
    return None


def test_live_suite_over_fuse_io_uring():
    reason = _unavailable()
    if reason:
        if os.environ.get("KVCPU_REQUIRE_URING"):
            pytest.fail(f"KVCPU_REQUIRE_URING is set: {reason}")
        pytest.skip(reason)
    before = PARAM.read_text().strip()
    env = {**os.environ, "KVCPU_TEST_TRANSPORT": "uring"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/live"],
                              cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=INNER_TIMEOUT)
    finally:
        PARAM.write_text(before + "\n")
    tail = proc.stdout[-6000:] + "\n--- stderr ---\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 100, tail
    assert "io_uring" not in " ".join(re.findall(r"SKIPPED.*", proc.stdout)), tail
