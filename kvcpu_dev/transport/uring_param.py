"""FUSE over io_uring is off in the kernel until root writes Y to the fuse
module's ``enable_uring`` parameter, which is global (every FUSE server
that asks then gets it) and read when a mount is set up.  kvcpu-dev
switches it on only when told to (``--transport uring``), and says so in
its log; it leaves it on, as a sysadmin's modprobe option would be (putting
it back would race another daemon's start).  ``--transport auto`` takes
io_uring only when it is already on."""

from __future__ import annotations

import logging
import pathlib

from ..errors import StartError

log = logging.getLogger("kvcpu_dev")

PARAM = pathlib.Path("/sys/module/fuse/parameters/enable_uring")


class UringUnavailable(StartError):
    """This kernel cannot serve FUSE over io_uring (one line)."""


def enabled(param: pathlib.Path = PARAM) -> bool | None:
    """Whether io_uring is on for new mounts; None if this kernel has none."""
    try:
        return param.read_text().strip() in ("Y", "1")
    except FileNotFoundError:
        return None
    except OSError:
        return False


def switch_on(name: str, param: pathlib.Path = PARAM) -> None:
    """``enable_uring`` on, for --transport uring; UringUnavailable (one
    line) where this kernel has none or it cannot be written."""
    state = enabled(param)
    if state is None:
        raise UringUnavailable(f"--transport uring: this kernel has no FUSE over io_uring ({param} is "
                               "missing: Linux 6.14+ built with CONFIG_FUSE_IO_URING)")
    if state:
        return
    try:
        param.write_text("Y\n")
    except OSError as exc:
        raise UringUnavailable(f"--transport uring: cannot switch on {param}: {exc.strerror}") from None
    log.info("%s: switched %s to Y (--transport uring); it stays on, and other FUSE servers that ask "
             "get io_uring too, until root writes N", name, param)
