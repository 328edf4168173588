"""One call on the device node, failing with the reference tool's messages."""

from __future__ import annotations

import os
from collections.abc import Callable

from kvcpu_dev.client import KvCpu

from .errors import Failure


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno is not None else str(exc)


def call(path: str, label: str, action: Callable[[KvCpu], object]) -> None:
    """Open the node and run ``action`` on it: a failed open is ``open PATH:
    <strerror>`` and a failed ioctl ``ioctl LABEL: <strerror>``."""
    try:
        dev = KvCpu(path)
    except OSError as exc:
        raise Failure(f"open {path}: {_strerror(exc)}") from None
    with dev:
        try:
            action(dev)
        except OSError as exc:
            raise Failure(f"ioctl {label}: {_strerror(exc)}") from None
