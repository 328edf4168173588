"""The --metrics endpoint's server (issue 23: 9), in-process with a fixed
text: what each request gets, a backlog that takes a burst, idle
connections that cost no thread and are closed, a cap that idle
connections cannot use to keep a scraper out.  The daemon's own endpoint
is tested through a real scrape in tests/live/test_bench.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kvcpu_dev.bench.httpd import MetricsServer

TEXT = b"# HELP kvcpu_x x\n# TYPE kvcpu_x counter\nkvcpu_x_total 1.0\n"


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    renders = []

    def render() -> bytes:
        renders.append(time.monotonic())
        return TEXT

    s = MetricsServer("127.0.0.1", 0, render, timeout=1.0)
    s.renders = renders  # type: ignore[attr-defined]
    s.start()
    try:
        yield s
    finally:
        s.close()


def exchange(server: MetricsServer, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` and read until the server closes or a whole answer came."""
    with socket.create_connection(server.address, timeout=timeout) as s:
        s.sendall(raw)
        return read_answer(s)


def read_answer(s: socket.socket) -> bytes:
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(body) >= length:
                return data
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("raw, code", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /metrics?name[]=kvcpu_x HTTP/1.0\r\n\r\n", 200),
    (b"GET http://x:9464/metrics HTTP/1.1\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
    (b"GET /../metrics HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"GET /metrics\r\n", 400),  # HTTP/0.9: no version, answered at once
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 400),  # a TLS hello
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n", 431),
])
def test_what_each_request_gets(server, raw, code):
    """Issue 23 (9): every path answered 200 with the metrics, and a request
    line without a version left the connection hanging."""
    t0 = time.monotonic()
    answer = exchange(server, raw)
    assert status(answer) == code and time.monotonic() - t0 < 0.9, answer[:200]
    assert answer.endswith(TEXT) == (code == 200)


def test_head_keep_alive_and_pipelining(server):
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        head = s.recv(65536)
        assert status(head) == 200 and head.endswith(b"\r\n\r\n") and b"Content-Length: %d" % len(TEXT) in head
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [int(a.split(b" ", 1)[0]) for a in answers] == [200, 404, 200]


def test_a_burst_connects_at_once_and_is_answered(server):
    """500 concurrent scrapes took 82 s to connect with a backlog of 5."""
    socks = []
    t0 = time.monotonic()
    try:
        for _ in range(500):
            s = socket.socket()
            s.settimeout(5)
            s.connect(server.address)
            socks.append(s)
        connected = time.monotonic() - t0
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        answers = [read_answer(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert connected < 2.0
    assert all(status(a) == 200 for a in answers)
    assert len(server.renders) < 500  # waiting requests share a rendering


def test_idle_connections_cost_no_thread_are_closed_and_keep_no_scraper_out(server):
    """300 idle connections held 202 threads (+49 MB) forever."""
    threads = threading.active_count()
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(300)]
    try:
        time.sleep(0.2)
        assert threading.active_count() == threads and server.connections == server.max_connections
        t0 = time.monotonic()  # behind 236 in the backlog: each takes the place of one idle 0.25 s
        assert status(exchange(server, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        assert time.monotonic() - t0 < 2.5
        time.sleep(1.5)  # past the timeout: every idle one is closed
        assert server.connections == 0
        for s in idle:
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections == 0


def test_a_slow_request_head_is_closed_at_the_timeout(server):
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert 0.5 < time.monotonic() - t0 < 3


def test_a_failed_rendering_is_a_500_not_a_dead_server(caplog):
    calls = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the model is gone")
        return TEXT

    s = MetricsServer("127.0.0.1", 0, render, timeout=1.0)
    s.start()
    try:
        assert status(exchange(s, b"GET /metrics HTTP/1.0\r\n\r\n")) == 500
        assert status(exchange(s, b"GET /metrics HTTP/1.0\r\n\r\n")) == 200
    finally:
        s.close()
    assert "rendering failed" in caplog.text
