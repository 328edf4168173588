"""A small client for /dev/kvcpu0, usable by runtimes and by kvctl.

It does what a runtime's wrapper does today, ``os.open`` plus
``fcntl.ioctl`` with the header's structs, so it works unchanged against
the kernel driver, a CUSE kvcpu-dev or a FUSE kvcpu-dev.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pathlib
from typing import Any

from . import mounts, paths
from .device import abi

DEFAULT_DEVICE = str(paths.DEFAULT_DEV_DIR / "kvcpu0")

Telemetry = collections.namedtuple("Telemetry", abi.TELEMETRY_FIELDS)  # type: ignore[misc]
Weights = collections.namedtuple("Weights", abi.WEIGHT_FIELDS)  # type: ignore[misc]


def default_device() -> str:
    """``$KVCPU_DEVICE``, else /dev/kvcpu0."""
    return os.environ.get("KVCPU_DEVICE") or DEFAULT_DEVICE


def attr_dir(device: str | os.PathLike[str], run_dir: str | os.PathLike[str] = paths.DEFAULT_RUN_DIR) -> pathlib.Path:
    """Where a kvcpu-dev device's attribute files are.

    A FUSE node is a link to ``<attr dir>/device``.  Otherwise (a CUSE
    node, or a link to one) the daemon's mount is found by its source
    ``kvcpu-<name>`` in the mount table; failing that, ``<run_dir>/<name>``."""
    path = pathlib.Path(device)
    name = path.name
    try:
        if path.is_symlink():
            target = path.resolve()
            if target.name == paths.DEVICE_FILE:
                return target.parent
            name = target.name
    except (OSError, RuntimeError):  # a loop or no access: not a kvcpu-dev link
        pass
    found = mounts.find(mounts.KVCPU_FS_TYPE, mounts.source_of(name))
    return pathlib.Path(found) if found else pathlib.Path(run_dir) / name


class KvCpu:
    """An open KV-CPU device.  Methods raise OSError with the device's errno."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = os.fspath(path) if path is not None else default_device()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> KvCpu:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def ioctl(self, cmd: int, payload: bytes | bytearray = b"") -> Any:
        return fcntl.ioctl(self.fd, cmd, payload)

    def step(self, step: int) -> None:
        self.ioctl(abi.KV_CPU_STEP_ADVANCE, abi.STEP_INFO.codec.pack(step))

    def _block(self, cmd: int, va: int, length: int, target_step: int = 0) -> None:
        self.ioctl(cmd, abi.BLOCK_INFO.codec.pack(va, length, target_step))

    def mark_hot(self, va: int, length: int) -> None:
        self._block(abi.KV_CPU_MARK_HOT, va, length)

    def evict(self, va: int, length: int) -> None:
        self._block(abi.KV_CPU_EVICT, va, length)

    def prefetch(self, va: int, length: int, target_step: int) -> None:
        self._block(abi.KV_CPU_PREFETCH, va, length, target_step)

    def share_prefix(self, va: int, length: int) -> None:
        self._block(abi.KV_CPU_SHARE_PREFIX, va, length)

    def set_weights(self, w_r: int, w_f: int, w_s: int, w_d: int,
                    evict_thresh: int, prefetch_thresh: int) -> None:
        payload = abi.WEIGHTS_INFO.codec.pack(w_r, w_f, w_s, w_d, evict_thresh, prefetch_thresh)
        self.ioctl(abi.KV_CPU_SET_WEIGHTS, payload)

    def update_weights(self, **changes: int) -> Weights:
        """Set some weights by name, keeping the others (read, then write:
        not atomic against another client doing the same)."""
        unknown = set(changes) - set(abi.WEIGHT_FIELDS)
        if unknown:
            raise ValueError(f"unknown weight {sorted(unknown)[0]!r}")
        current = self.weights()._asdict()
        current.update(changes)
        self.set_weights(**current)
        return Weights(**current)

    def telemetry(self) -> Telemetry:
        buf = bytearray(abi.TELEMETRY_INFO.size)
        self.ioctl(abi.KV_CPU_GET_TELEMETRY, buf)
        return Telemetry(*abi.TELEMETRY_INFO.codec.unpack(buf))

    def weights(self) -> Weights:
        t = self.telemetry()
        return Weights(*(getattr(t, f) for f in abi.WEIGHT_FIELDS))


def answers(node: str | os.PathLike[str]) -> bool:
    """Whether the node takes a GET_TELEMETRY, as a client would send it."""
    try:
        with KvCpu(node) as dev:
            dev.telemetry()
    except OSError:
        return False
    return True
