"""FUSE over io_uring is off in the kernel until root writes Y to the fuse
module's ``enable_uring`` parameter, which is global (every FUSE server
that asks then gets it) and read when a mount is set up.  kvcpu-dev
switches it on only when told to (``--transport uring``), says so, and
puts it back once its own mount has its queues; ``--transport auto``
takes io_uring only when it is already on."""

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


class Switch:
    """``enable_uring`` on for one mount, and back as it was afterwards."""

    def __init__(self, name: str, param: pathlib.Path = PARAM):
        self.name, self.param = name, param
        self.switched = False

    def on(self) -> None:
        state = enabled(self.param)
        if state is None:
            raise UringUnavailable(f"--transport uring: this kernel has no FUSE over io_uring ({self.param} is "
                                   "missing: Linux 6.14+ built with CONFIG_FUSE_IO_URING)")
        if state:
            return
        try:
            self.param.write_text("Y\n")
        except OSError as exc:
            raise UringUnavailable(f"--transport uring: cannot switch on {self.param}: {exc.strerror}") from None
        self.switched = True
        log.info("%s: switched %s to Y for this mount (--transport uring); it goes back to N once the "
                 "queues are registered", self.name, self.param)

    def restore(self) -> None:
        if self.switched:
            self.switched = False
            try:
                self.param.write_text("N\n")
            except OSError as exc:
                log.warning("%s: cannot put %s back to N: %s", self.name, self.param, exc.strerror)
                return
            log.info("%s: %s is N again (this mount keeps its io_uring queues)", self.name, self.param)
