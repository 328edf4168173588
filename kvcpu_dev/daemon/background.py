"""The background start: like ``insmod kv_cpu.ko mock=1``, the command
returns once the node answers.  The work happens in a forked child, which
reports through a pipe when the node is published (or why it could not
be); the parent then opens the node as a client would.  An open, not an
ioctl: the device's own thread answers both, and an open is no command, so
the start leaves nothing in a recording, the metrics or the --trace log
(a GET_TELEMETRY probe was the first command of every --record file).

The parent loads neither trio nor numpy nor the model: the child imports
what a daemon needs, and a parent that only waits and exits should not
pay to load, and then to tear down, what it never uses."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time

import click

from ..errors import StartError
from .options import Options
from .rundir import RunDir, open_log
from .stop import STOP_TIMEOUT

log = logging.getLogger("kvcpu_dev")

READY_TIMEOUT = 10.0


def start_background(opts: Options) -> int:
    """Fork; the child becomes the daemon; return once the node answers.
    A child that neither reports nor answers in time is stopped, so a
    failed start never leaves a daemon behind."""
    run_dir = RunDir.open(opts.run_dir, create=True)
    assert run_dir is not None
    with run_dir:
        try:
            log_fd = open_log(opts, run_dir)
        except OSError as exc:
            raise StartError(f"cannot open the log {opts.log_file}: {exc.strerror}") from None
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon: never return into the parent's code
        code = 1
        try:
            os.close(rfd)
            os.setsid()
            _detach_stdio(log_fd)
            code = _child(opts, wfd)
        finally:
            os._exit(code)
    os.close(wfd)
    os.close(log_fd)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        message = _read_report(rfd, deadline)
        if not message.startswith("OK "):
            os.waitpid(pid, 0)
            raise StartError(message.removeprefix("ERR ") or f"the daemon exited during start-up; see {opts.log_file}")
        while not _opens(opts.node):
            if time.monotonic() > deadline:
                raise StartError(f"{opts.node} does not answer ioctls; see {opts.log_file}")
            time.sleep(0.005)
    except StartError:
        _reap(pid)
        raise
    click.echo(f"kvcpu-dev: {message[3:]} (pid {pid})")
    return 0


def _opens(node: os.PathLike[str]) -> bool:
    """The node opens: the link resolves and the device's thread answered."""
    try:
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _read_report(rfd: int, deadline: float) -> str:
    """The child's one report (it closes the pipe after it, or dies)."""
    chunks: list[bytes] = []
    with os.fdopen(rfd, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                raise StartError(f"no word from the daemon within {READY_TIMEOUT:.0f} s")
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                return b"".join(chunks).decode(errors="replace").strip()
            chunks.append(chunk)


def _reap(pid: int) -> None:
    """Stop a child that failed to start (it cleans up on SIGTERM)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ChildProcessError):
        for _ in range(int(STOP_TIMEOUT / 0.01)):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _child(opts: Options, wfd: int) -> int:
    from .privileges import PrivilegeError
    from .serve import serve

    def report(ok: bool, msg: str) -> None:
        nonlocal wfd
        if wfd >= 0:
            os.write(wfd, f"{'OK' if ok else 'ERR'} {msg}".encode())
            os.close(wfd)
            wfd = -1

    try:
        return serve(opts, report)
    except (StartError, PrivilegeError) as exc:
        report(False, str(exc))
        log.error("%s", exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent must hear why
        log.exception("kvcpu-dev failed")
        report(False, f"internal error: {exc}")
        return 1


def _detach_stdio(log_fd: int) -> None:
    """stdin from /dev/null, stdout and stderr to the log."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
