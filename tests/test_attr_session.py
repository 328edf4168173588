"""When the attribute mount's session gives the daemon's loop back
(transport/libfuse.py, Session.serve): after every few requests, so the
ring's drain runs between them, but not between a reader's requests that
follow each other at once (a large view's 1 MiB reads), and never for
longer than _HOLD_S, nor again sooner after a hold than it lasted.

libfuse is replaced by a pipe: each byte written is one request, which
takes REQUEST_S to serve and says whether its next follows (b"c") or not
(b"e"); b"x" ends the session.  The session's checkpoints and waits are
counted: each ends a turn."""

from __future__ import annotations

import errno
import os
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import trio

from kvcpu_dev.transport import libfuse

REQUEST_S = 0.003  # longer than _BATCH_S: a request that does not continue yields


class Requests:
    """The pipe's requests, the Operations' answer to continues(), and how
    many requests each of the session's turns served."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.turns = [0]
        self._continued = False

    def serve_one(self, se: Any, buf: Any, mark: Any) -> int:
        try:
            kind = os.read(self.r, 1)
        except BlockingIOError:
            return -errno.EAGAIN
        if kind == b"x":
            return 0
        time.sleep(REQUEST_S)
        self.turns[-1] += 1
        self._continued = kind == b"c"
        return 1

    def continues(self) -> bool:
        continued, self._continued = self._continued, False
        return continued

    def given_back(self) -> None:
        if self.turns[-1]:
            self.turns.append(0)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[Requests]:
    reqs = Requests()
    real = trio.lowlevel

    async def checkpoint() -> None:
        reqs.given_back()
        await real.checkpoint()

    async def wait_readable(fd: int) -> None:
        reqs.given_back()
        await real.wait_readable(fd)

    monkeypatch.setattr(libfuse, "lib", types.SimpleNamespace(
        fuse_session_fd=lambda se: reqs.r, kv_fuse_serve_one=reqs.serve_one, free=lambda mem: None))
    monkeypatch.setattr(libfuse, "trio", types.SimpleNamespace(lowlevel=types.SimpleNamespace(
        checkpoint=checkpoint, wait_readable=wait_readable)))
    yield reqs
    reqs.close()


def turns(requests: Requests, feed: Callable[[int], object]) -> list[int]:
    """How many requests each turn of the session served, ``feed`` (in a
    thread) writing the requests."""

    async def main() -> None:
        feeder = threading.Thread(target=feed, args=(requests.w,))
        feeder.start()
        await libfuse.Session(None, cast(libfuse.Operations, requests), None, "fuse", "test").serve()
        feeder.join()

    trio.run(main)
    return [n for n in requests.turns if n]


def test_requests_that_do_not_continue_give_the_loop_back_after_each(requests: Requests) -> None:
    assert turns(requests, lambda w: os.write(w, b"eeeeex")) == [1, 1, 1, 1, 1]


def test_a_readers_requests_that_follow_at_once_are_served_in_one_turn(requests: Requests) -> None:
    assert turns(requests, lambda w: os.write(w, b"cccce" + b"x")) == [5]


def test_a_request_that_does_not_come_within_the_wait_ends_the_turn(requests: Requests) -> None:
    def feed(w: int) -> None:
        os.write(w, b"cc")
        time.sleep(0.05)  # the reader is slow: the loop is given back meanwhile
        os.write(w, b"ex")

    assert turns(requests, feed) == [2, 1]


def test_after_a_hold_the_next_begins_no_sooner_than_it_lasted(requests: Requests) -> None:
    """A reader whose runs of requests end before _HOLD_S (a file read to
    its end, then the next) still leaves the loop half the time at least."""
    run = int(0.8 * libfuse._HOLD_S / REQUEST_S)  # requests a run, within one hold
    got = turns(requests, lambda w: os.write(w, (b"c" * (run - 1) + b"e") * 6 + b"x"))
    assert got[0] == run, got
    held = [n for n in got if n > 1]
    assert sum(got) - sum(held) >= sum(held) // 2, got  # calm turns of one request between the holds
    rest = got[1:]
    assert rest[: run // 2] == [1] * (run // 2), got  # right after the first hold: calm


def test_a_hold_ends_after_hold_s_and_the_next_turn_does_not_hold(requests: Requests) -> None:
    n = int(3 * libfuse._HOLD_S / REQUEST_S)  # three holds' worth of continuing requests
    got = turns(requests, lambda w: os.write(w, b"c" * n + b"x"))
    # the request that begins a hold, then those served while it lasts
    # (_HOLD_S of them at REQUEST_S each, fewer on a slow machine)
    held = 1 + -(-libfuse._HOLD_S // REQUEST_S)
    assert sum(got) == n
    assert 2 <= got[0] <= held, got  # the first turn held ...
    assert got[1] == 1, got  # ... and the turn after a whole hold is one request: calm
    assert max(got) <= held, got
