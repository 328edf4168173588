"""``kvcpu-dev --stop``: signal the daemon that holds the name's lock and
wait until it let go of the lock and exited."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time

from ..errors import StartError
from .cleanup import remove_leftovers
from .lock import lock_if_free, open_daemon
from .options import Options
from .rundir import RunDir

log = logging.getLogger("kvcpu_dev")

STOP_TIMEOUT = 10.0


def stop(opts: Options) -> str:
    """Stop the daemon for ``opts.name``; returns the line to print."""
    run_dir = RunDir.open(opts.run_dir, create=False)
    if run_dir is None:
        raise StartError(f"{opts.name} is not running (no {opts.run_dir})")
    with run_dir:
        with lock_if_free(opts, run_dir) as free:
            if free:  # nobody runs: tidy what a crash left, and say so
                removed = remove_leftovers(opts, run_dir)
                note = f" (removed {', '.join(removed)})" if removed else ""
                raise StartError(f"{opts.name} is not running{note}")
        found = open_daemon(opts, run_dir)
        if found is None:
            raise StartError(f"{opts.name} is starting or stopping (no process holds its lock yet); try again")
        pid, pidfd = found
        try:
            with contextlib.suppress(ProcessLookupError):  # it may be on its way out
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)  # a stopped daemon must hear it
            deadline = time.monotonic() + STOP_TIMEOUT
            while True:
                with lock_if_free(opts, run_dir) as free:
                    if free:  # and whatever a crash of its own start left (a temporary link)
                        for what in remove_leftovers(opts, run_dir):
                            log.info("%s: removed %s", opts.name, what)
                        break
                if time.monotonic() > deadline:
                    raise StartError(f"{opts.name} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
                time.sleep(0.01)
            # The lock is free once the daemon let go of it; "stopped" means
            # the process is gone too (a pidfd reads ready when it exits).
            if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise StartError(f"{opts.name} (pid {pid}) did not exit within {STOP_TIMEOUT:.0f} s")
        finally:
            os.close(pidfd)
    return f"kvcpu-dev: {opts.name} stopped (pid {pid})"
