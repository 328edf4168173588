"""The daemon's Python threads' scheduling: they yield to the fast path and
to the clients, unless the ring is filling or a reader's request starves
(the drainer, and the threads that answer readers).  The C side of this is
in native/ring.c (the fast path raising a starved drainer) and
native/watch.c (the watcher raising starved reader threads); this module
is the whole of it on the Python side."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from ..native._fuse import ffi, lib
from .handle import NativeDriver

log = logging.getLogger("kvcpu_dev")

#: How long a thread holding the GIL keeps it from another that asks
#: (sys.setswitchinterval; PythonPriority.start_watching).
GIL_SWITCH_S = 0.0005


class Mark:
    """What a watched thread's requests say to the watcher (native/watch.c):
    ``begin()`` when one waits for the thread (said by whoever queues it)
    or the thread starts on it, ``end()`` when none waits any more; ``with
    mark:`` around serving one.  Does nothing until watched."""

    def __init__(self, driver: NativeDriver):
        self.driver = driver
        #: [0] waiting since (ns), [1] served, [2] set by the watcher.
        self.words = ffi.new("uint64_t[3]")
        self.watched = False

    def begin(self) -> None:
        if self.watched:
            lib.kv_watch_busy(self.driver.handle, self.words, 1)

    def end(self) -> None:
        if self.watched:
            lib.kv_watch_busy(self.driver.handle, self.words, 0)

    def __enter__(self) -> None:
        self.begin()

    def __exit__(self, *exc: object) -> None:
        self.end()


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

    def watch(self, tid: int, fd: int = -1, *, idle: bool = True) -> Mark:
        """Look after thread ``tid``, which answers readers: a request that
        waits on ``fd`` (which the thread polls), or that the thread serves
        (inside the returned mark), for 3 ms while a watched thread is
        runnable and not running makes every watched thread SCHED_RR until
        none waits, 20 ms at most (native/watch.c); then each goes back to
        SCHED_IDLE (``idle``) or SCHED_OTHER.  A request pending 1 s is
        given up on: its thread will not take it, and it raises nobody until
        that thread serves again.  Before start_watching()."""
        mark = Mark(self.driver)
        slot = lib.kv_watch_add(self.driver.handle, fd, tid, os.SCHED_IDLE if idle else os.SCHED_OTHER, mark.words)
        if slot < 0:
            log.info("cannot watch thread %d for starved readers: %s", tid, os.strerror(-slot))
        else:
            mark.watched = True
        return mark

    def start_watching(self) -> str | None:
        """Under a flood the kernel gives a thread that slept until a reader
        came almost no time, whatever its nice: a `cat` of an attribute
        waited up to 180 ms (native/watch.c).  A request served within
        3 ms raises nothing.  Returns why the watcher cannot raise anybody
        (None: it can).

        Raised or not, a reader thread shares the GIL with the drainer,
        which always wants it under a flood: each system call the
        endpoint's I/O thread makes to answer a scrape gives the GIL away,
        and taking it back waits a switch interval (the convoy effect; 5 ms
        by default).  A scrape's reply took up to 80 ms so; GIL_SWITCH_S
        makes it 10 times shorter, and costs nothing while one thread wants
        the GIL."""
        sys.setswitchinterval(GIL_SWITCH_S)
        err = lib.kv_watch_start(self.driver.handle)
        if err:
            return f"no watcher thread ({os.strerror(err)})"
        if lib.kv_watch_refusals(self.driver.handle):
            return "no real-time priority (CAP_SYS_NICE, or a cgroup's cpu.rt_runtime_us)"
        return None

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
                "readers_starved": lib.kv_watch_raises(h), "readers_boost_refused": lib.kv_watch_refusals(h),
                "readers_given_up": lib.kv_watch_given_up(h), "readers_boost_capped": lib.kv_watch_capped(h)}

    def quiet(self) -> None:
        """The load is over: yield again if the fast path raised us.  Not
        as soon as the ring is empty: under a load that goes on, SCHED_IDLE
        would starve the thread again until the ring overflows."""
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(0) != os.SCHED_IDLE:
                self.lower()
