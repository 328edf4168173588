"""The CUSE side: a real character device /dev/<name> whose ioctls reach
the device core.  Restricted ioctls: the kernel sizes every copy from the
command number, which fits all seven commands."""

from __future__ import annotations

import errno
from typing import Any

import trio

from . import lowlevel
from .core import Device
from .fs import answer_ioctl


class CuseNode:
    def __init__(self, device: Device):
        self.device = device
        self.ready = trio.Event()

    def started(self) -> None:
        self.ready.set()

    def open(self, req: Any, fi: Any) -> None:
        lowlevel.reply_open(req, fi, 0)

    def ioctl(self, req: Any, cmd: int, flags: int, payload: bytes, out_bufsz: int) -> None:
        if flags & lowlevel.lib.FUSE_IOCTL_UNRESTRICTED:  # not asked for; refuse
            raise OSError(errno.ENOTTY, "unrestricted ioctl")
        answer_ioctl(self.device, req, cmd, payload, out_bufsz)
