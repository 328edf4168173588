"""The CUSE transport: a real character device /dev/<name>, answered by
the C fast path (fastpath.c's CUSE operations).  Restricted ioctls: the
kernel sizes every copy from the command number, which fits all seven
commands, and a NULL or bad pointer fails in the kernel with EFAULT.

What is CUSE's own here is the node: the kernel's devtmpfs creates
/dev/<name> after INIT, and we give it --mode and --group; in a container
whose /dev is a private tmpfs it never shows, so we make it ourselves from
the numbers CUSE registered (and remove it on stop).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import stat

import trio

log = logging.getLogger("kvcpu_dev")

#: How long the kernel may take to create /dev/N after CUSE_INIT.
NODE_APPEAR_SECONDS = 5.0


class CuseNode:
    """/dev/<name> of a CUSE device: waited for, or made, then chmod'ed."""

    def __init__(self, name: str, path: pathlib.Path, mode: int, gid: int):
        self.name = name
        self.path = path
        self.mode = mode
        self.gid = gid
        self.made: pathlib.Path | None = None  # made by us, not devtmpfs

    async def settle(self) -> None:
        with trio.move_on_after(NODE_APPEAR_SECONDS):
            while not self.path.exists():
                numbers = pathlib.Path("/sys/class/cuse", self.name, "dev")
                if numbers.exists():
                    await self._make(numbers)
                    break
                await trio.sleep(0.01)
        if not self.path.exists():
            raise OSError(errno.ENODEV, f"CUSE did not create {self.path}")
        os.chown(self.path, 0, self.gid)
        os.chmod(self.path, self.mode)

    async def _make(self, numbers: pathlib.Path) -> None:
        await trio.sleep(0.2)  # devtmpfs usually wins; give it the chance
        if self.path.exists():
            return
        major, minor = map(int, numbers.read_text().split(":"))
        try:
            os.mknod(self.path, stat.S_IFCHR | self.mode, os.makedev(major, minor))
        except FileExistsError:  # devtmpfs was only late
            return
        self.made = self.path
        log.info("%s: made %s (%d:%d) by hand: /dev is not devtmpfs", self.name, self.path, major, minor)

    def remove(self) -> None:
        """The kernel removes its own node; ours we remove."""
        if self.made is not None:
            with contextlib.suppress(FileNotFoundError):
                self.made.unlink()
            self.made = None
