"""pytest plugin (entry point ``pytest11``): a private KV-CPU device per test.

    def test_my_runtime(kvcpu_device):
        run_my_runtime(device_path=kvcpu_device.path)
        assert kvcpu_device.commands(kind="STEP")[-1].step == 128

``kvcpu_device`` starts ``kvcpu-dev --mock`` on its own name, run
directory and dev directory under the test's tmp_path, records every
command from then on (``tmp_path/NAME.kvrec``), and stops it after the test (nothing left running
or mounted, whatever the test did).  It needs root and /dev/fuse (or
/dev/cuse); elsewhere the test is skipped, or fails when
``KVCPU_REQUIRE_LIVE`` is set.  Options: ``--kvcpu-transport auto|fuse|cuse``
(default: ``$KVCPU_TEST_TRANSPORT`` or auto), and the ``kvcpu_args``
marker for extra daemon arguments: ``@pytest.mark.kvcpu_args("--no-model")``.

What the fixture gives (a ``KvCpuDevice``):

``path``               the node to open (str)
``commands(kind=None)`` the ioctls recorded so far, oldest first, decoded
                       (``.name``, ``.errno``, ``.pid``, ``.comm``, the
                       struct's fields as attributes: ``.step``, ``.va``...)
``records()``          everything recorded (stores, resets, unplug/replug)
``fault(cmd, errno=, count=|every=|probability=, seed=, latency=)``
                       install a fault rule; returns its id
``clear_faults()``, ``reset()``, ``unplug()``, ``replug()``
``telemetry()``        the driver's telemetry (from the attribute file, so
                       it is not itself a recorded command, and works
                       while unplugged)
``attr(name)``         any attribute file's text (``model_stats``...)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from . import faults as fault_rules
from . import kvrec as fmt

_names = itertools.count()


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("kvcpu", "KV-CPU emulated device")
    group.addoption("--kvcpu-transport", default=None, choices=("auto", "fuse", "cuse", "uring"),
                    help="transport of the kvcpu_device fixture's daemon (default: "
                         "$KVCPU_TEST_TRANSPORT or auto)")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "kvcpu_args(*args): extra kvcpu-dev arguments for kvcpu_device")


def _skip_reason(transport: str) -> str | None:
    if os.geteuid() != 0:
        return "kvcpu_device needs root (kvcpu-dev mounts FUSE or creates a CUSE device)"
    if transport in ("auto", "fuse", "uring") and not os.path.exists("/dev/fuse") and not os.path.exists("/dev/cuse"):
        return "kvcpu_device needs /dev/fuse or /dev/cuse"
    if transport == "uring" and not os.path.exists("/sys/module/fuse/parameters/enable_uring"):
        return "kvcpu_device: --kvcpu-transport uring but this kernel has no FUSE over io_uring"
    if transport == "cuse" and not os.path.exists("/dev/cuse"):
        return "kvcpu_device: --kvcpu-transport cuse but /dev/cuse is missing"
    return None


class KvCpuDevice:
    """One private daemon; see the module's docstring."""

    def __init__(self, base: pathlib.Path, transport: str, extra: tuple[str, ...] = ()):
        self.name = f"kvpt{os.getpid()}x{next(_names)}"
        self.base = base
        self.run_dir = base / "kvcpu-run"
        self.dev_dir = base / "kvcpu-dev"
        self.recording = base / f"{self.name}.kvrec"
        self.transport = transport
        self.extra = extra
        self._started = False

    # -- life -----------------------------------------------------------------
    def _cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", "from kvcpu_dev.daemon.cli import main; main()", *args,
               "--name", self.name, "--run-dir", str(self.run_dir), "--dev-dir", str(self.dev_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> KvCpuDevice:
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        self._started = True
        r = self._cli("--mock", "--transport", self.transport, *self.extra)
        if r.returncode != 0:
            raise RuntimeError(f"kvcpu-dev did not start: {r.stderr.strip() or r.stdout.strip()}")
        # Recording starts once the device is up: commands() holds only
        # what the test's code sent, not the start-up check.
        self._write("record", f"start {self.recording}\n")
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._cli("--stop", timeout=30)
        attr = self.attr_dir
        if os.path.ismount(attr):  # a daemon that would not stop: take its mounts away
            subprocess.run(["umount", "-l", str(attr)], capture_output=True)
        link = self.dev_dir / self.name
        if link.is_symlink():
            link.unlink()

    # -- where ----------------------------------------------------------------
    @property
    def path(self) -> str:
        if self.transport == "cuse" or (self.transport == "auto" and os.path.exists("/dev/cuse")):
            return f"/dev/{self.name}"
        return str(self.dev_dir / self.name)

    @property
    def attr_dir(self) -> pathlib.Path:
        return self.run_dir / self.name

    def attr(self, name: str) -> str:
        return (self.attr_dir / name).read_text()

    def _write(self, name: str, text: str) -> None:
        fd = os.open(self.attr_dir / name, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    # -- what the runtime did ----------------------------------------------------
    def records(self) -> list[fmt.Record]:
        """Everything recorded so far (reading ``record`` drains the ring
        and the recorder writes each record as it is drained)."""
        with contextlib.suppress(OSError):
            self.attr("record")
        return [r for r in fmt.read(self.recording).records if r.kind != fmt.KIND_MARK]

    def commands(self, kind: str | None = None) -> list[fmt.Record]:
        """The ioctls so far; ``kind``: STEP, HOT, EVICT, PREFETCH, SHARE,
        WEIGHTS, TELEMETRY (or the header's names)."""
        number = fmt.command_number(kind) if kind is not None else None
        return [r for r in self.records()
                if r.kind == fmt.KIND_IOCTL and (number is None or r.cmd == number)]

    def telemetry(self) -> dict[str, int]:
        return {k: int(v, 0) for k, v in (line.split("=", 1) for line in self.attr("telemetry").splitlines())}

    # -- breaking it ------------------------------------------------------------
    def fault(self, cmd: str = "any", errno: str | int | None = None, *, count: int | None = None,
              every: int | None = None, probability: float | None = None, seed: int | None = None,
              latency: str | None = None) -> int:
        """Install a fault rule (as ``kvctl fault add``); returns its id."""
        words = [f"cmd={cmd}"]
        for key, value in (("errno", errno), ("count", count), ("every", every),
                           ("probability", probability), ("seed", seed), ("latency", latency)):
            if value is not None:
                words.append(f"{key}={value}")
        fault_rules.parse_rule(words)  # ValueError with the reason
        self._write("faults", "add " + " ".join(words) + "\n")
        ids = [int(line.split()[0].split("=")[1]) for line in self.attr("faults").splitlines()]
        return max(ids)

    def faults(self) -> str:
        return self.attr("faults")

    def clear_faults(self) -> None:
        self._write("faults", "clear\n")

    def reset(self) -> None:
        self._write("control", "reset\n")

    def unplug(self) -> None:
        self._write("control", "unplug\n")

    def replug(self) -> None:
        self._write("control", "replug\n")


@pytest.fixture
def kvcpu_device(request: Any, tmp_path: pathlib.Path) -> Iterator[KvCpuDevice]:
    """A private, recording kvcpu-dev for this test; stopped afterwards."""
    transport = (request.config.getoption("--kvcpu-transport")
                 or os.environ.get("KVCPU_TEST_TRANSPORT") or "auto")
    reason = _skip_reason(transport)
    if reason:
        if os.environ.get("KVCPU_REQUIRE_LIVE"):
            pytest.fail(f"KVCPU_REQUIRE_LIVE is set but {reason}")
        pytest.skip(reason)
    marker = request.node.get_closest_marker("kvcpu_args")
    extra = tuple(marker.args) if marker else ()
    device = KvCpuDevice(tmp_path, transport, extra)
    try:
        device.start()
        yield device
    finally:
        device.stop()
        # nothing of ours may stay mounted
        deadline = time.monotonic() + 5
        while os.path.ismount(device.attr_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
