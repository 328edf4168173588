"""The ``--metrics`` endpoint: a small HTTP/1.1 server of our own on the
standard library, for a port anyone who can reach it may connect to.

prometheus-client's server (http.server, a thread per connection) listened
with a backlog of 5 (500 concurrent scrapes took 82 s to connect, in SYN
retries), held an idle connection and its thread forever (300 of them:
202 threads, +49 MB, never returned), answered every path with the
metrics, and left a request line without an HTTP version hanging.  Here:

- a real backlog (``BACKLOG``, as net.core.somaxconn allows): a burst of
  scrapers waits in the kernel's accept queue, not in SYN retries;
- two threads whatever the load: ``kvcpu-http`` moves every connection's
  bytes (selectors, non-blocking sockets), ``kvcpu-metrics`` renders the
  text.  A connection costs a socket and its buffers, never a thread;
- at most ``MAX_CONNECTIONS`` open at once: past that, a new connection
  takes the place of the one idle longest, if it has sent no whole request
  for ``EVICT_AFTER`` seconds (so idle connections cannot keep a scraper
  out for long, and a burst's fresh ones are not dropped); otherwise new
  connections wait in the backlog;
- a connection must send a whole request head within ``TIMEOUT`` seconds
  of being accepted or of its last answer (keep-alive), and take its
  answer within ``TIMEOUT``; else it is closed;
- ``GET`` or ``HEAD /metrics`` (a query string is ignored) answers 200
  with the text; another path 404, another method 405, a request line
  that is not ``METHOD TARGET HTTP/1.x`` 400 at once (HTTP/0.9's bare
  ``GET /metrics`` included), another version 505, a head over
  ``MAX_HEAD`` bytes 431; bodies are not read (the connection closes
  after the answer);
- the requests waiting when a rendering starts share it, and a rendering
  begun less than ``MAX_AGE`` seconds ago answers the next ones too: the
  daemon renders at most ``1 / MAX_AGE`` times a second however many
  scrape it, and a scrape sees the device as of at most ``MAX_AGE``
  before it came;
- both threads run SCHED_IDLE, as the daemon's Python thread does: the
  endpoint gets the CPU time the device's clients and the fast path do not
  want (benchmarks/bench_metrics.py: a STEP client's p99 beside a scrape
  flood).  Under a flood that leaves none, a scrape would wait for it to
  end: the daemon's watcher (``watch``: driver/priority.py) raises both
  threads while a scrape waits.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import logging
import os
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("kvcpu_dev")

BACKLOG = 1024
MAX_CONNECTIONS = 64
TIMEOUT = 10.0
EVICT_AFTER = 0.25
MAX_AGE = 1.0
MAX_HEAD = 8192
PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/(\d+)\.(\d+)")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            505: "HTTP Version Not Supported"}


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    idle_since: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview = field(default_factory=lambda: memoryview(b""))
    keep_alive: bool = True
    waiting: bool = False  # its request is with the renderer


class Busy(Protocol):
    """What a watched thread's requests tell the watcher."""

    def begin(self) -> None:
        """A request waits for the thread (or it starts on one)."""

    def end(self) -> None:
        """None waits any more."""


class Watch(Protocol):
    """Looks after a thread that answers readers (driver/priority.py's
    PythonPriority.watch): ``fd`` is what the thread polls."""

    def __call__(self, tid: int, fd: int = -1) -> Busy: ...


class _Unwatched:
    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass


class MetricsServer:
    """Serves ``render()`` (the exposition's bytes) at /metrics on
    ``host:port``; ``address`` is where it listens once started."""

    def __init__(self, host: str, port: int, render: Callable[[], bytes], *,
                 max_connections: int = MAX_CONNECTIONS, timeout: float = TIMEOUT, backlog: int = BACKLOG,
                 max_age: float = MAX_AGE, watch: Watch | None = None):
        self.render = render
        self._watch = watch
        #: What each thread's requests tell the watcher, once watched: the
        #: renderer's wait from when the I/O thread queues them.
        self._io_busy: Busy = _Unwatched()
        self._render_busy: Busy = _Unwatched()
        self.max_age = max_age
        self.max_connections = max_connections
        self.timeout = timeout
        self.evict_after = min(EVICT_AFTER, timeout / 4)
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, kind, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(where)
            self._listener.listen(backlog)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        bound = self._listener.getsockname()
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._accepting = False
        #: (connection, HEAD?, keep-alive?) for the renderer; None: stop.
        self._requests: queue.SimpleQueue[tuple[int, bool, bool] | None] = queue.SimpleQueue()
        self._answers: collections.deque[tuple[int, bytes]] = collections.deque()
        self._stop = False
        self._threads = [threading.Thread(target=self._io_loop, name="kvcpu-http", daemon=True),
                         threading.Thread(target=self._render_loop, name="kvcpu-metrics", daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()
        if self._watch is not None:
            io, renderer = self._threads
            assert io.native_id is not None and renderer.native_id is not None  # started
            self._io_busy = self._watch(io.native_id, self._sel.fileno())
            self._render_busy = self._watch(renderer.native_id)

    def close(self) -> None:
        """Stop both threads and close every socket; safe to call twice."""
        if self._stop:
            return
        self._stop = True
        self._requests.put(None)
        self._wake()
        io, renderer = self._threads
        if io.is_alive():
            io.join(5)  # woken through the pipe: at once
        # A rendering in progress may wait on the attribute mount, which the
        # daemon tears down after this: it is not waited for, and finds the
        # wake pipe closed when it returns.
        renderer.join(0.5)
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self._listener.close()
        self._sel.close()
        with self._wake_lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- the renderer ------------------------------------------------------------------

    def _render_loop(self) -> None:
        _idle_priority()
        failed = False
        last: tuple[float, bytes] | None = None  # (when begun, the text)
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while (more := self._requests.get_nowait()) is not None:
                    batch.append(more)
            began = time.monotonic()
            if last is not None and began - last[0] <= self.max_age:
                status, body = 200, last[1]
            else:
                try:
                    status, body = 200, self.render()
                    last = (began, body)
                except Exception:
                    if not failed:  # once: a scraper retries every few seconds
                        log.exception("metrics: rendering failed")
                    failed = True
                    status, body = 500, b"the metrics could not be rendered\n"
            for conn_id, head_only, keep_alive in batch:
                self._answers.append((conn_id, _response(status, body, head_only, keep_alive)))
            self._render_busy.end()
            if not self._requests.empty():  # queued while it rendered: they wait still
                self._render_busy.begin()
            self._wake()
            if self._stop:
                return

    def _wake(self) -> None:
        with self._wake_lock, contextlib.suppress(BlockingIOError):
            if self._wake_w >= 0:  # not closed (a descriptor number is reused at once)
                os.write(self._wake_w, b"x")

    # -- the connections ------------------------------------------------------------------

    def _io_loop(self) -> None:
        _idle_priority()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listen(True)
        while not self._stop:
            now = time.monotonic()
            nearest = min((c.deadline for c in self._conns.values()), default=now + 1.0)
            if not self._accepting:  # and when one will have been idle long enough to give its place
                idle = [c.idle_since for c in self._conns.values() if not c.waiting and not c.outbox]
                nearest = min([nearest, *(t + self.evict_after for t in idle)])
            ready = self._sel.select(max(0.0, min(nearest - now, 1.0)))
            self._io_busy.begin()
            try:
                for key, events in ready:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.data is None:
                        self._take_answers()
                    else:
                        self._serve(key.data, events)
            finally:
                self._io_busy.end()
            now = time.monotonic()
            for conn_id, conn in list(self._conns.items()):
                if now > conn.deadline:
                    self._close(conn_id)
            if not self._accepting and self._idlest() is not None:
                self._listen(True)  # one has been idle long enough to give its place

    def _listen(self, on: bool) -> None:
        if on and not self._accepting:
            self._sel.register(self._listener, selectors.EVENT_READ, "listener")
        elif not on and self._accepting:
            self._sel.unregister(self._listener)
        self._accepting = on

    def _accept(self) -> None:
        while True:
            full = len(self._conns) >= self.max_connections
            if full and self._idlest() is None:
                self._listen(False)  # every one busy: the rest wait in the backlog
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNABORTED...: the next one may do
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("metrics: cannot accept a connection: %s", exc.strerror)
                    return
                continue
            if full:
                idlest = self._idlest()
                if idlest is not None:
                    self._close(idlest)
            sock.setblocking(False)
            conn_id = next(self._ids)
            now = time.monotonic()
            self._conns[conn_id] = _Conn(sock, now + self.timeout, now)
            self._sel.register(sock, selectors.EVENT_READ, conn_id)

    def _idlest(self) -> int | None:
        """The connection idle longest, if it has waited for a request head
        for at least ``evict_after`` seconds and has nothing to read now (a
        request that arrived in this very round is served, not dropped)."""
        since = time.monotonic() - self.evict_after
        idle = sorted((c.idle_since, i) for i, c in self._conns.items()
                      if not c.waiting and not c.outbox and c.idle_since <= since)
        for _, conn_id in idle:
            conn = self._conns.get(conn_id)
            if conn is None:
                continue
            try:
                data = conn.sock.recv(MAX_HEAD, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return conn_id
            except OSError:
                data = b""
            if data:
                self._serve(conn_id, selectors.EVENT_READ)
            else:  # closed by its peer
                self._close(conn_id)
                return None
        return None

    def _close(self, conn_id: int) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        if not self._stop:
            self._listen(True)

    def _serve(self, conn_id: int, events: int) -> None:
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        if events & selectors.EVENT_WRITE:
            self._send(conn_id, conn)
            return
        try:
            data = conn.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn_id)
            return
        conn.inbox += data
        self._parse(conn_id, conn)

    def _parse(self, conn_id: int, conn: _Conn) -> None:
        """Act on the request at the head of ``conn.inbox``, once it says
        enough: a bad request line is answered as soon as it is complete."""
        if conn.waiting or conn.outbox:
            return
        inbox = bytes(conn.inbox)
        line_end = inbox.find(b"\n")
        if line_end < 0:
            if len(inbox) > MAX_HEAD:
                self._reply(conn_id, conn, 431)
            return
        m = _REQUEST_LINE.fullmatch(inbox[:line_end].rstrip(b"\r"))
        if m is None:
            self._reply(conn_id, conn, 400)
            return
        if (m.group(3), m.group(4)) not in ((b"1", b"0"), (b"1", b"1")):
            self._reply(conn_id, conn, 505)
            return
        end = _head_end(inbox)
        if end < 0:
            if len(inbox) > MAX_HEAD:
                self._reply(conn_id, conn, 431)
            return
        if end > MAX_HEAD:
            self._reply(conn_id, conn, 431)
            return
        del conn.inbox[:end]
        headers = _headers(inbox[line_end + 1:end])
        connection = headers.get(b"connection", b"").lower()
        conn.keep_alive = (connection != b"close" if m.group(4) == b"1" else connection == b"keep-alive")
        if headers.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in headers:
            conn.keep_alive = False  # its body is not read: close after the answer
        method, target = m.group(1), m.group(2)
        if re.match(rb"https?://", target):  # absolute-form: the path after the authority
            target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
        if target.split(b"?", 1)[0] != PATH.encode():
            self._reply(conn_id, conn, 404)
        elif method not in (b"GET", b"HEAD"):
            self._reply(conn_id, conn, 405)
        else:
            conn.waiting = True
            conn.deadline = time.monotonic() + 2 * self.timeout  # the renderer's time, then its own
            self._sel.unregister(conn.sock)  # nothing to read until it is answered
            self._render_busy.begin()
            self._requests.put((conn_id, method == b"HEAD", conn.keep_alive))

    def _reply(self, conn_id: int, conn: _Conn, status: int) -> None:
        if status not in (404, 405):
            conn.keep_alive = False  # the stream may not be at a request's start: close after
        body = f"{status} {_REASONS[status]}\n".encode()
        self._queue_out(conn_id, conn, _response(status, body, False, conn.keep_alive, allow=status == 405))

    def _take_answers(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while self._answers:
            conn_id, payload = self._answers.popleft()
            conn = self._conns.get(conn_id)
            if conn is None:  # closed meanwhile (timed out)
                continue
            conn.waiting = False
            self._sel.register(conn.sock, selectors.EVENT_READ, conn_id)
            self._queue_out(conn_id, conn, payload)

    def _queue_out(self, conn_id: int, conn: _Conn, payload: bytes) -> None:
        conn.outbox = memoryview(payload)
        conn.deadline = time.monotonic() + self.timeout
        self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn_id)
        self._send(conn_id, conn)

    def _send(self, conn_id: int, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn_id)
            return
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            return
        if not conn.keep_alive:
            self._close(conn_id)
            return
        conn.deadline = time.monotonic() + self.timeout  # idle until its next request
        conn.idle_since = time.monotonic()
        self._sel.modify(conn.sock, selectors.EVENT_READ, conn_id)
        if conn.inbox:  # pipelined
            self._parse(conn_id, conn)


def _head_end(data: bytes) -> int:
    """Where the request head ends (after its blank line), or -1."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends) if ends else -1


def _headers(block: bytes) -> dict[bytes, bytes]:
    out = {}
    for line in block.splitlines():
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _response(status: int, body: bytes, head_only: bool, keep_alive: bool, allow: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {CONTENT_TYPE if status == 200 else 'text/plain; charset=utf-8'}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    if allow:
        head.append("Allow: GET, HEAD")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)


def _idle_priority() -> None:
    """This thread only: SCHED_IDLE, as the daemon's Python thread."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
