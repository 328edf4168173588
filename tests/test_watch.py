"""The watcher (native/watch.c, driver/priority.py): a request that waits
for a reader-facing thread 3 ms makes every watched thread SCHED_RR until
none waits; then each gets its own policy back.  Driven in process on
threads of this test, with a pipe standing for the attribute mount's
/dev/fuse fd."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kvcpu_dev.driver.handle import NativeDriver
from kvcpu_dev.driver.priority import PythonPriority

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_RR and leaving SCHED_IDLE need CAP_SYS_NICE")


def eventually(check: Callable[[], bool], within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


class Idle:
    """A thread that sleeps under SCHED_IDLE, as the daemon's reader-facing
    threads do between requests."""

    def __init__(self) -> None:
        self.ready, self.done = threading.Event(), threading.Event()
        self.tid = 0
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        self.tid = threading.get_native_id()
        self.ready.set()
        self.done.wait(30)

    @property
    def policy(self) -> int:
        return os.sched_getscheduler(self.tid)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


Watched = tuple[NativeDriver, PythonPriority, list[Idle]]


@pytest.fixture
def watched() -> Iterator[Watched]:
    native = NativeDriver()
    priority = PythonPriority(native)
    threads = [Idle(), Idle()]
    try:
        yield native, priority, threads
    finally:
        priority.close()
        for t in threads:
            t.stop()
        native.close()


def test_a_request_left_waiting_raises_every_watched_thread_until_taken(watched: Watched) -> None:
    native, priority, (server, other) = watched
    r, w = os.pipe()
    try:
        priority.watch(server.tid, r)
        priority.watch(other.tid)
        priority.start_watching()
        os.write(w, b"x")  # a request nobody takes
        assert eventually(lambda: server.policy == other.policy == os.SCHED_RR)
        assert os.sched_getparam(server.tid).sched_priority == 1
        assert priority.stats()["readers_starved"] == 1
        os.read(r, 1)  # taken: both go back to their own policy
        assert eventually(lambda: server.policy == other.policy == os.SCHED_IDLE)
        assert priority.stats()["readers_starved"] == 1 and priority.stats()["readers_boost_refused"] == 0
    finally:
        os.close(r)
        os.close(w)


def test_a_request_queued_for_a_thread_without_an_fd_raises_it_until_it_ends(watched: Watched) -> None:
    """The metrics renderer waits on a queue: whoever queues its work says
    so (begin), and the renderer says when none waits (end)."""
    native, priority, (renderer, _) = watched
    mark = priority.watch(renderer.tid)
    priority.start_watching()
    mark.begin()
    assert eventually(lambda: renderer.policy == os.SCHED_RR)
    mark.begin()  # a second request: the first one's time is kept
    mark.end()
    assert eventually(lambda: renderer.policy == os.SCHED_IDLE)
    assert priority.stats()["readers_starved"] == 1


def test_requests_served_within_the_grace_raise_nothing(watched: Watched) -> None:
    native, priority, (server, _) = watched
    r, w = os.pipe()
    try:
        mark = priority.watch(server.tid, r)
        priority.start_watching()
        for _ in range(20):
            os.write(w, b"x")
            with mark:  # taken and answered at once, as by an idle daemon
                os.read(r, 1)
            time.sleep(0.005)
        assert priority.stats()["readers_starved"] <= 1  # one descheduling of this test, at most
        assert server.policy == os.SCHED_IDLE
    finally:
        os.close(r)
        os.close(w)


def test_a_thread_serving_steadily_is_not_starved_while_its_fd_stays_readable(watched: Watched) -> None:
    """A reader of a large view keeps the fd readable for a while; each
    request served since the last look means the thread keeps up."""
    native, priority, (server, _) = watched
    r, w = os.pipe()
    try:
        mark = priority.watch(server.tid, r)
        priority.start_watching()
        os.write(w, b"x" * 200)
        raised = 0
        for _ in range(200):
            with mark:
                os.read(r, 1)
            raised += server.policy == os.SCHED_RR
            time.sleep(0.0005)
        assert raised < 50  # a descheduling of this test may raise it for a moment, not throughout
    finally:
        os.close(r)
        os.close(w)


def test_the_consumer_goes_back_to_sched_other_raised(watched: Watched) -> None:
    """The daemon's Python thread also drains the ring: after a boost it is
    left raised (SCHED_OTHER), and lowers itself once commands stop."""
    native, priority, (python, _) = watched
    priority.raise_when_behind(python.tid)
    mark = priority.watch(python.tid, idle=False)
    priority.start_watching()
    mark.begin()
    assert eventually(lambda: python.policy == os.SCHED_RR)
    mark.end()
    assert eventually(lambda: python.policy == os.SCHED_OTHER)
    assert priority.stats()["python_raised"] == 1


def test_a_thread_gone_or_refused_is_counted_and_the_others_still_raised(watched: Watched) -> None:
    native, priority, (server, _) = watched
    mark = priority.watch(2**31 - 1)  # no such thread: ESRCH, as EPERM without CAP_SYS_NICE
    priority.watch(server.tid)
    priority.start_watching()
    mark.begin()
    assert eventually(lambda: server.policy == os.SCHED_RR)
    assert priority.stats()["readers_boost_refused"] >= 1
    mark.end()
    assert eventually(lambda: server.policy == os.SCHED_IDLE)


def test_watching_is_set_up_before_the_watcher_starts_and_has_four_slots(watched: Watched) -> None:
    native, priority, (server, _) = watched
    marks = [priority.watch(server.tid) for _ in range(5)]
    assert [m.watched for m in marks] == [True] * 4 + [False]  # ENOSPC: logged, the mark does nothing
    priority.start_watching()
    late = priority.watch(server.tid)
    assert not late.watched  # EBUSY
    late.begin()
    time.sleep(0.02)
    assert server.policy == os.SCHED_IDLE and priority.stats()["readers_starved"] == 0


def test_stopping_a_boosted_watcher_gives_the_threads_back(watched: Watched) -> None:
    native, priority, (server, _) = watched
    mark = priority.watch(server.tid)
    priority.start_watching()
    mark.begin()
    assert eventually(lambda: server.policy == os.SCHED_RR)
    priority.close()
    assert server.policy == os.SCHED_IDLE


def test_a_request_its_thread_never_takes_is_given_up_after_a_second(watched: Watched) -> None:
    """A thread that is gone or stuck must not keep the others raised: after
    1 s its request raises nobody, until that thread serves again."""
    native, priority, (stuck, other) = watched
    r, w = os.pipe()
    try:
        mark = priority.watch(stuck.tid, r)
        priority.watch(other.tid)
        priority.start_watching()
        os.write(w, b"x")
        assert eventually(lambda: other.policy == os.SCHED_RR)
        assert eventually(lambda: other.policy == stuck.policy == os.SCHED_IDLE, within=3.0)
        assert priority.stats()["readers_given_up"] == 1
        with mark:  # it serves again (the request stays): watched again
            pass
        assert eventually(lambda: other.policy == os.SCHED_RR, within=1.0)
        os.read(r, 1)
        assert eventually(lambda: other.policy == os.SCHED_IDLE)
        assert priority.stats()["readers_starved"] == 2
    finally:
        os.close(r)
        os.close(w)
