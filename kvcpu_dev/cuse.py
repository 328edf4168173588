"""The CUSE side: a real character device /dev/<name> whose ioctls reach
the device core (see lowlevel.kv_cuse_ioctl).  Restricted ioctls: the
kernel sizes every copy from the command number, which fits all seven
commands, and a NULL or bad pointer fails in the kernel with EFAULT."""

from __future__ import annotations

from typing import Any

import trio

from . import lowlevel
from .core import Device


class CuseNode:
    def __init__(self, device: Device):
        self.device = device
        self.ready = trio.Event()

    def started(self) -> None:
        self.ready.set()

    def open(self, req: Any, fi: Any) -> None:
        lowlevel.reply_open(req, fi, 0)
