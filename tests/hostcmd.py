"""Host commands for the container tests (Docker, podman): a skip that CI
turns into a failure, a run that fails the test with the command's output,
and a quiet run for clean-up."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import NoReturn

import pytest


def skip_or_fail(required_by: str, reason: str) -> NoReturn:
    """Skip with ``reason``, or fail when ``required_by`` (an environment
    variable such as KVCPU_REQUIRE_DOCKER) is 1: CI must run the test."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{required_by}=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


def run(cmd: list[str], *, timeout: float = 120, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command with no stdin; on failure (if ``check``) or a
    timeout, fail the test with its output."""
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{shlex.join(cmd)} timed out after {timeout}s\n{_text(exc.stdout)}\n{_text(exc.stderr)}",
                    pytrace=False)
    if check and result.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} exited {result.returncode}\n"
                    f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}",
                    pytrace=False)
    return result


def _text(output: bytes | str | None) -> str:
    """What a timed-out run had printed: subprocess hands it over undecoded."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def quiet(cmd: list[str], timeout: float = 60,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str] | None:
    """For clean-up: run, never raise."""
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
