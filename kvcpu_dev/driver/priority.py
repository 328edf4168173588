"""The Python thread's scheduling: it yields to the fast path and to the
clients, unless the ring is filling.  The C side of this (the fast path
raising a starved drainer) is in native/ring.c; this module is the whole
of it on the Python side."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from ..native._fuse import lib
from .handle import NativeDriver

log = logging.getLogger("kvcpu_dev")


class PythonPriority:
    """Python's thread yields to the fast path, unless the ring is filling.

    Draining the ring and the model's work can wait; a client's ioctl
    cannot.  Under SCHED_IDLE the kernel runs this thread only on CPU time
    nobody else wants, never preempts a client or the fast path for it,
    and treats a CPU that runs only this thread as idle when it places a
    waking task, so the fast path and its clients are not pushed apart
    (a cross-CPU wake-up costs 25-45 us here; the round trip is 7).

    A load that leaves no CPU idle starves such a thread for as long as it
    lasts, and the ring overflows (8 processes flooding STEPs: 40-60% of
    the events lost to the model).  A starved thread cannot notice that
    itself, so the fast path does: once the ring is a quarter full (a 10
    ms look never finds that much of one client's back-to-back commands)
    it sets this thread to SCHED_OTHER (native/ring.c, kv_wake()), and the
    thread lowers itself again when commands stop (quiet()).  In a lossless
    ring a request that finds it full raises it too, before it waits.  Draining then costs it
    5-9% of a CPU under a flood of Python clients.  Not always in time:
    the scheduler may still run it late, and 2 of 4 floods on this 2-CPU
    machine lost events at their start (counted; the model says
    in_sync=0).  An unprivileged daemon (--runas) may not leave SCHED_IDLE
    (sched(7), RLIMIT_NICE): it stays there, and overflow is counted."""

    def __init__(self, driver: NativeDriver):
        self.driver = driver

    def lower(self) -> None:
        """SCHED_IDLE, after the fast-path thread was created with the
        normal policy (a new thread inherits its creator's)."""
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # a seccomp or container policy may refuse it
            log.info("cannot lower the Python thread's priority: %s", exc.strerror)
            return
        self.raise_when_behind(threading.get_native_id())

    def watch_requests(self, fd: int) -> None:
        """Let a request that waits on ``fd`` (the attribute mount this
        thread serves) raise it too: a flood of STEPs the fast path
        coalesces never fills the ring, and starved under it a `cat` of an
        attribute waited 565 ms (native/watch.c).  A request served within
        5 ms raises nothing."""
        err = lib.kv_watch_start(self.driver.handle, fd)
        if err:
            log.info("cannot watch the attribute mount for starved requests: %s", os.strerror(err))

    def urge(self) -> None:
        """Another thread is about to wait for this one (a metrics scrape
        reading the model): raise it now if it is not raised already."""
        lib.kv_ring_raise(self.driver.handle)

    def close(self) -> None:
        """Stop watching (before the watched fd is closed)."""
        lib.kv_watch_stop(self.driver.handle)

    def raise_when_behind(self, tid: int) -> None:
        """Let the fast path set thread ``tid`` (the drainer, under
        SCHED_IDLE) to SCHED_OTHER once the ring is a quarter full; this
        call also says the thread has lowered itself again."""
        lib.kv_ring_raise_when_behind(self.driver.handle, tid)
        lib.kv_ring_lowered(self.driver.handle)

    def stats(self) -> dict[str, int]:
        """How often the fast path raised the drainer, and how often the
        kernel refused (no CAP_SYS_NICE: a container, --runas)."""
        h = self.driver.handle
        return {"python_raised": lib.kv_ring_raises(h), "python_raise_refused": lib.kv_ring_raise_refusals(h),
                "python_raised_for_attributes": lib.kv_watch_raises(h)}

    def quiet(self) -> None:
        """The load is over: yield again if the fast path raised us.  Not
        as soon as the ring is empty: under a load that goes on, SCHED_IDLE
        would starve the thread again until the ring overflows."""
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(0) != os.SCHED_IDLE:
                self.lower()
