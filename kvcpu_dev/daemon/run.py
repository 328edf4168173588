"""``kvcpu-dev run [--name N | --device PATH] -- CMD [ARGS...]``: run an
unmodified program with the linux-mm RFC's madvise(2) interface to the
device on a stock kernel.

CMD, and everything it forks and execs, runs under a seccomp filter that
hands madvise() with advice MADV_KV_HOT (104), MADV_KV_EVICT (105) and
MADV_KV_PREFETCH (106) to the daemon's supervisor and lets every other
system call through untouched.  The daemon answers each hint as the RFC
says, and a valid one reaches the device as the equivalent ioctl does.

In order, as the invoking user:

1. open the node O_RDWR (the permission check: a user who may not open
   it sends nothing, and CMD never starts);
2. connect to the daemon's socket, RUN_DIR/N.madvise (found from the node
   as kvctl finds the attribute files);
3. fork the child, which installs the filter and waits (native/launch.c);
4. send its listener and the open node to the daemon (SCM_RIGHTS); the
   daemon checks that the node is its own and takes the listener;
5. close our copies (a daemon that goes away then gives CMD's madvise
   calls ENOSYS, not a hang), and let the child exec CMD;
6. forward SIGINT, SIGTERM and SIGHUP to it (not those the terminal sent:
   CMD is in our process group and had them already), and exit with its
   status: N, or 128+N for signal N, as a shell reports it.

It cannot start (one line on stderr, exit 125): no such node, the node not
openable, no daemon's madvise socket, no seccomp user notification, a
seccomp listener already installed (a nested run, a container runtime's).
CMD not found: 127; not executable: 126.

This process loads neither trio, numpy, click nor the device model.
"""

from __future__ import annotations

import array
import errno
import os
import pathlib
import signal
import socket
import sys

USAGE = """\
usage: kvcpu-dev run [--name N | --device PATH] [--] CMD [ARGS...]

Run CMD (and everything it starts) so that its madvise(addr, len, advice)
calls with the linux-mm RFC's advice values reach the KV-CPU device on a
stock kernel:

  MADV_KV_HOT      104  MARK_HOT on [addr, addr+len)
  MADV_KV_EVICT    105  EVICT on [addr, addr+len)
  MADV_KV_PREFETCH 106  len = (W << 32) | t: STEP_ADVANCE to t, lookahead W

Every other system call runs untouched.  The calls return what the RFC
says: 0; EINVAL for an unaligned addr, or len == 0 with HOT or EVICT;
EFAULT when addr's page is not mapped; or the device's errno (an injected
fault, ENODEV while unplugged).

options:
  --name N       the device /dev/N
  --device PATH  the device node (default: $KVCPU_DEVICE, else /dev/kvcpu0)
  -h, --help     this text

Sending hints needs what opening the node needs (kvcpu-dev --mode/--group).
Exit status: CMD's (128+N if killed by signal N); 125 if it could not
start; 126/127 if CMD is not executable / not found.  SIGINT, SIGTERM and
SIGHUP sent to this process are forwarded to CMD.
"""

#: Exit status when CMD could not be started (as env(1), timeout(1)).
CANNOT_START = 125
#: The request run sends with the two descriptors (daemon/madvise.py).
HELLO = b"kvcpu-run 1 "
#: How long the daemon may take to answer (seconds): it answers at once
#: unless it is stuck.
ANSWER_TIMEOUT_S = 30.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: si_code of a signal the kernel sent (a terminal's ^C, a hang-up).
SI_KERNEL = 0x80


class CannotStart(Exception):
    """One line saying why CMD was not started."""


def parse(argv: list[str]) -> tuple[str, list[str]]:
    """(node path, CMD argv); SystemExit for --help and usage errors."""
    device: str | None = None
    name: str | None = None
    args = list(argv)
    while args:
        arg = args[0]
        if arg == "--":
            args.pop(0)
            break
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if arg in ("--name", "--device") or arg.startswith(("--name=", "--device=")):
            key, eq, value = arg.partition("=")
            args.pop(0)
            if not eq:
                if not args:
                    usage(f"{key} needs a value")
                value = args.pop(0)
            if key == "--name":
                if "/" in value or value in ("", ".", ".."):
                    usage(f"invalid device name {value!r}")
                name = value
            else:
                device = value
            continue
        if arg.startswith("-") and arg != "-":
            usage(f"unknown option {arg} (options go before CMD; -- ends them)")
        break
    if name is not None and device is not None:
        usage("--name and --device name the same thing: give one")
    if not args:
        usage("no command given")
    from .. import client, paths  # the client's light modules only

    if device is None:
        device = str(paths.DEFAULT_DEV_DIR / name) if name is not None else client.default_device()
    return device, args


def usage(message: str) -> None:
    sys.stderr.write(f"kvcpu-dev run: {message}\n{USAGE.splitlines()[0]}\n")
    raise SystemExit(CANNOT_START)


def socket_path(node: str) -> pathlib.Path:
    """RUN_DIR/N.madvise for the device at ``node``."""
    from .. import client, paths

    attrs = client.attr_dir(node)
    return attrs.parent / paths.madvise_socket_name(attrs.name)


def _connect(node: str) -> socket.socket:
    path = socket_path(node)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        address = str(path)
        if len(os.fsencode(address)) > 107:  # past sun_path: through the directory's descriptor
            dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dfd}/{path.name}")
            finally:
                os.close(dfd)
        else:
            sock.connect(address)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise CannotStart(f"{node} has no kvcpu-dev madvise service ({path}: {exc.strerror}); "
                              "is it a kvcpu-dev daemon?") from None
        raise CannotStart(f"{path}: {exc.strerror}") from None
    return sock


def _spawn_error(err: int) -> str:
    if err == errno.EBUSY:
        return ("a seccomp listener is already installed for this process "
                "(kvcpu-dev run inside kvcpu-dev run, or a container runtime's)")
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return f"this kernel has no seccomp user notification (seccomp: {os.strerror(err)})"
    return f"cannot install the madvise filter: {os.strerror(err)}"


def _handover(sock: socket.socket, listener: int, node_fd: int, comm: str) -> None:
    """Send the listener and the node; the daemon's answer, or CannotStart."""
    fds = array.array("i", [listener, node_fd])
    try:
        sock.sendmsg([HELLO + comm.encode(errors="replace")[:64] + b"\n"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        sock.settimeout(ANSWER_TIMEOUT_S)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(512)
            if not chunk:
                break
            answer += chunk
    except OSError as exc:
        raise CannotStart(f"the daemon did not answer: {exc.strerror or exc}") from None
    line = answer.decode(errors="replace").strip()
    if not line:
        raise CannotStart("the daemon closed the connection without an answer (is it stopping?)")
    if line != "ok":
        raise CannotStart(f"the daemon refused: {line.removeprefix('error ')}")


def start(node: str, cmd: list[str]) -> tuple[int, int]:
    """Steps 1-5: CMD exec'd under the filter; (its pid, or -1 if the exec
    failed, and the status to exit with then)."""
    from ..native._fuse import ffi, lib

    try:
        node_fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise CannotStart(f"open {node}: {exc.strerror}") from None
    try:
        sock = _connect(node)
    except BaseException:
        os.close(node_fd)
        raise
    keep = [ffi.new("char[]", os.fsencode(a)) for a in cmd]
    argv = ffi.new("char *[]", [*keep, ffi.NULL])
    child = ffi.new("struct kv_madv_child *")
    try:
        res = lib.kv_madv_spawn(argv, 0, child)
        if res < 0:
            raise CannotStart(_spawn_error(-res))
        try:
            _handover(sock, child.listener, node_fd, os.path.basename(cmd[0]))
        except BaseException:
            lib.kv_madv_cancel(child)
            raise
        finally:
            os.close(child.listener)  # the daemon's alone now (or nobody's)
    finally:
        sock.close()
        os.close(node_fd)
    res = lib.kv_madv_go(child)
    if res < 0:
        sys.stderr.write(f"kvcpu-dev run: {cmd[0]}: {os.strerror(-res)}\n")
        return -1, _wait(child.pid)
    return child.pid, 0


def _status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return _status(status)
        except InterruptedError:
            continue


def supervise(pid: int) -> int:
    """Step 6, with INT/TERM/HUP/CHLD blocked: forward, then CMD's status."""
    waited = {*FORWARDED, signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _status(status)
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD and info.si_code != SI_KERNEL:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def main(argv: list[str]) -> int:
    node, cmd = parse(argv)
    # Blocked before the child exists, so no signal is lost in between;
    # the child unblocks everything before it execs CMD.
    signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
    try:
        pid, status = start(node, cmd)
    except CannotStart as exc:
        sys.stderr.write(f"kvcpu-dev run: {exc}\n")
        return CANNOT_START
    if pid < 0:
        return status
    return supervise(pid)
