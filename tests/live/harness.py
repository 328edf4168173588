"""The live suite's harness: a real ``kvcpu-dev --mock`` on a private name
and private directories (``Daemon``), the clients a runtime would use to
reach its node, and what they should observe (``SpecDevice``).

The transport comes from ``KVCPU_TEST_TRANSPORT`` (``fuse``, the default, or
``cuse``); the tests themselves do not care which.  Every daemon made by
``daemon_factory`` is torn down even when its test failed: ``--stop``, then
SIGKILL, then a lazy unmount, then the node link.

``SpecDevice`` is a transcription of the spec (tests/kvspec.py), not of the
code under test.  The fixtures handing these out are in conftest.py.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from kvspec import (
    BLOCK_REGS,
    DEFAULTS,
    EVICT,
    FIELDS,
    HOT,
    PREFETCH,
    SHARE,
    STEP,
    STEP_REG,
    TELEMETRY,
    TELEMETRY_INFO,
    U32_MAX,
    U64_MAX,
    WEIGHT_FIELDS,
    WEIGHT_REGS,
    WEIGHTS,
)

TRANSPORT = os.environ.get("KVCPU_TEST_TRANSPORT", "fuse")
_BIN = pathlib.Path(sys.executable).parent

#: One operation on the device: ("step", n), (kind, va, len, target) with
#: kind in BLOCK, or ("weights", values).
Op = tuple[Any, ...]


def _script(name: str) -> str:
    """The venv's script, else the one on PATH, else the bare name (which
    ``live_skip_reason`` and the ``kvctl`` fixture then report missing)."""
    candidate = _BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name) or name


KVCPU_DEV = _script("kvcpu-dev")
KVCTL = _script("kvctl")


def installed(script: str) -> bool:
    return shutil.which(script) is not None


def live_skip_reason() -> str | None:
    if TRANSPORT not in ("fuse", "cuse", "uring"):
        return f"KVCPU_TEST_TRANSPORT={TRANSPORT!r}: must be fuse, cuse or uring"
    if os.geteuid() != 0:
        return "live tests need root (they mount FUSE or create a CUSE device)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if TRANSPORT == "uring" and not os.path.exists("/sys/module/fuse/parameters/enable_uring"):
        return "KVCPU_TEST_TRANSPORT=uring but this kernel has no FUSE over io_uring"
    if TRANSPORT == "cuse" and not os.path.exists("/dev/cuse"):
        return "KVCPU_TEST_TRANSPORT=cuse but /dev/cuse is missing (no CUSE in this kernel)"
    if not installed(KVCPU_DEV):
        return f"the kvcpu-dev script is not installed (looked in {_BIN} and PATH)"
    return None


# -- the spec, written out (tests/kvspec.py) -------------------------------------

#: Block commands: op kind -> (ioctl number, counter, decoded name, registers).
BLOCK = {
    "hot": (HOT, "hot_count", "MARK_HOT", BLOCK_REGS[HOT]),
    "evict": (EVICT, "evict_count", "EVICT", BLOCK_REGS[EVICT]),
    "prefetch": (PREFETCH, "prefetch_count", "PREFETCH", BLOCK_REGS[PREFETCH]),
    "share": (SHARE, "share_count", "SHARE_PREFIX", BLOCK_REGS[SHARE]),
}


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """Linux's generic _IOC: dir 1 = write (_IOW), 2 = read (_IOR)."""
    return direction << 30 | size << 16 | type_ << 8 | nr


class TraceEntry(NamedTuple):
    """One logged command (decoded), and the register writes logged after it."""

    command: str
    args: dict[str, int]
    writes: list[tuple[int, int]]


class SpecDevice:
    """The device as the spec describes it, one ``Op`` at a time."""

    def __init__(self, telemetry: dict[str, int] | None = None) -> None:
        self.telemetry = dict(DEFAULTS if telemetry is None else telemetry)
        self.trace: list[TraceEntry] = []

    def apply(self, op: Op) -> int:
        """Returns the errno the client should see (0 for success)."""
        kind, *args = op
        t = self.telemetry
        if kind == "step":
            (n,) = args
            t.update(current_step=n, step_count=t["step_count"] + 1, last_target_step=n)
            self.trace.append(TraceEntry("STEP_ADVANCE", {"step": n}, [(STEP_REG, n)]))
        elif kind == "weights":
            (values,) = args
            t.update(zip(WEIGHT_FIELDS, values))
            self.trace.append(TraceEntry("SET_WEIGHTS", dict(zip(WEIGHT_FIELDS, values)),
                                         list(zip(WEIGHT_REGS, values))))
        else:
            va, length, target = args
            _, counter, decoded, regs = BLOCK[kind]
            entry = TraceEntry(decoded, {"va": va, "len": length, "target_step": target}, [])
            self.trace.append(entry)  # a rejected command is still a command
            if length == 0:
                return errno.EINVAL
            t.update({counter: t[counter] + 1, "last_va": va, "last_len": length,
                      "last_target_step": target})
            entry.writes.extend(zip(regs, (va, length, target)))
        return 0


# -- mounts and processes ---------------------------------------------------------


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                for line in f]


def mounted(path: pathlib.Path) -> bool:
    return os.path.realpath(path) in mount_points() or str(path) in mount_points()


def alive(pid: int) -> bool:
    """Running (a zombie does not count)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def errno_of(fn: Callable[..., object], *args: Any) -> int:
    """0 if the call succeeds, else the errno of its OSError (one without
    an errno is not an answer from the device: it propagates)."""
    try:
        fn(*args)
    except OSError as exc:
        return _errno(exc)
    return 0


def _errno(exc: OSError) -> int:
    if exc.errno is None:
        raise exc
    return exc.errno


_REG_LINE = re.compile(r"#(\d+) ([A-Z_]+)@(0x[0-9a-fA-F]+) <- (0x[0-9a-fA-F]+)\s*$")
_CMD_LINE = re.compile(r"(?<![\w#@])([A-Z][A-Z_]+)\(([^()]*)\)\s*$")
_SYSFS_LINE = re.compile(r"\bsysfs (\w+)=(\S+)\s*$")


def parse_trace(text: str) -> tuple[list[TraceEntry], list[int]]:
    """The --trace log as entries (GET_TELEMETRY, which writes nothing, left
    out) and the sequence numbers of the register writes, in log order.

    Recognised lines (any prefix): a decoded command ``NAME(field=0x.., ...)``
    with NAME the header's minus ``KV_CPU_`` and the struct's field names; a
    register write ``#SEQ REG@0xOFFSET <- 0xVALUE``, which belongs to the
    command (or ``sysfs FIELD=VALUE`` store) logged before it."""
    entries: list[TraceEntry] = []
    seqs: list[int] = []
    for line in text.splitlines():
        if m := _REG_LINE.search(line):
            seqs.append(int(m.group(1)))
            if not entries:
                entries.append(TraceEntry("<none>", {}, []))
            entries[-1].writes.append((int(m.group(3), 16), int(m.group(4), 16)))
        elif m := _SYSFS_LINE.search(line):
            entries.append(TraceEntry("sysfs", {m.group(1): int(m.group(2), 0)}, []))
        elif m := _CMD_LINE.search(line):
            args = dict(a.split("=", 1) for a in m.group(2).split(", ") if a)
            entries.append(TraceEntry(m.group(1), {k: int(v, 0) for k, v in args.items()}, []))
    return [e for e in entries if e.command != "GET_TELEMETRY" or e.writes], seqs


# -- the daemon -------------------------------------------------------------------


class Daemon:
    """One kvcpu-dev instance: its command line, paths, node and log."""

    def __init__(self, name: str, base: pathlib.Path, transport: str = TRANSPORT) -> None:
        self.name = name
        self.transport = transport
        self.run_dir = base / "run"
        self.dev_dir = base / "dev"
        self.pids: set[int] = set()

    @property
    def link(self) -> pathlib.Path:
        """DIR2/NAME: the FUSE node (a symlink), or a link to the CUSE node."""
        return self.dev_dir / self.name

    @property
    def node(self) -> pathlib.Path:
        return pathlib.Path("/dev") / self.name if self.transport == "cuse" else self.link

    @property
    def attr_dir(self) -> pathlib.Path:
        return self.run_dir / self.name

    @property
    def pid_file(self) -> pathlib.Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> pathlib.Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        return int(self.pid_file.read_text().split()[0])

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        paths = ["--name", self.name, "--run-dir", str(self.run_dir), "--dev-dir", str(self.dev_dir)]
        return subprocess.run([KVCPU_DEV, *args, *paths], capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        result = self.cli("--mock", "--transport", self.transport, *extra)
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.pids.add(self.pid)
        if m := re.search(r"\(pid (\d+)\)", result.stdout):
            self.pids.add(int(m.group(1)))
        if check:
            assert result.returncode == 0, f"kvcpu-dev start failed:\n{result.stderr}"
        return result

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.cli("--stop")

    def cleanup(self) -> None:
        """Leave nothing running, mounted or linked; safe to call twice."""
        if any(alive(p) for p in self.pids) or self.pid_file.exists() or mounted(self.attr_dir):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("--stop", timeout=20)
        for pid in self.pids:
            if alive(pid) and self.name.encode() in _cmdline(pid):
                _kill(pid)
        if mounted(self.attr_dir):
            subprocess.run(["umount", "-l", str(self.attr_dir)], capture_output=True)
        if self.link.is_symlink():
            self.link.unlink()

    # -- the node ----------------------------------------------------------

    def open(self, flags: int = os.O_RDWR) -> int:
        return os.open(self.node, flags | os.O_CLOEXEC)

    def ioctl(self, number: int, arg: Any = 0) -> Any:
        fd = self.open()
        try:
            return fcntl.ioctl(fd, number, arg)
        finally:
            os.close(fd)

    def telemetry(self) -> dict[str, int]:
        buf = bytearray(TELEMETRY_INFO.size)
        self.ioctl(TELEMETRY, buf)
        return dict(zip(FIELDS, TELEMETRY_INFO.unpack(buf)))

    def step(self, n: int) -> None:
        self.ioctl(STEP, struct.pack("<Q", n))

    def answers(self) -> bool:
        return errno_of(self.telemetry) == 0

    # -- attributes ----------------------------------------------------------

    def attr(self, name: str) -> str:
        return (self.attr_dir / name).read_text()

    def write_attr(self, name: str, data: bytes) -> int:
        """One write() of ``data``, as ``echo`` does it: 0 or the errno."""
        try:
            fd = os.open(self.attr_dir / name, os.O_WRONLY | os.O_TRUNC)
        except OSError as exc:
            return _errno(exc)
        try:
            return errno_of(os.write, fd, data)
        finally:
            os.close(fd)

    # -- the log ---------------------------------------------------------------

    def sync(self) -> None:
        """The daemon logs commands as it drains its event ring, after the
        ioctl has returned; an attribute read drains the ring first."""
        with contextlib.suppress(OSError):
            self.attr("current_step")

    def log(self, since: int = 0) -> str:
        """The log, from byte offset ``since`` (see ``mark``)."""
        self.sync()
        try:
            with open(self.log_file, "rb") as f:
                f.seek(since)
                return f.read().decode()
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Where the log ends now: ``trace(since=mark)`` reads what follows."""
        self.sync()
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def trace(self, since: int = 0) -> list[TraceEntry]:
        return parse_trace(self.log(since))[0]

    def register_writes(self, since: int = 0) -> list[tuple[int, int]]:
        return [w for e in self.trace(since) for w in e.writes]


def _kill(pid: int) -> None:
    """SIGKILL, then wait a little for it to be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), timeout=5)


def _cmdline(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


_names = itertools.count()
_every_daemon: list[Daemon] = []


def new_name() -> str:
    return f"kvt{os.getpid()}{next(_names)}"


#: ``make(*extra, base_dir=None, start=True)``: what ``daemon_factory`` yields.
MakeDaemon = Callable[..., Daemon]


@contextlib.contextmanager
def daemon_factory(base: pathlib.Path) -> Iterator[MakeDaemon]:
    """Yields ``make``: a Daemon on a fresh name under ``base`` (or
    ``base_dir``), started with ``--mock --transport T *extra`` unless
    ``start`` is false.  On exit all are torn down, and none may be left
    mounted."""
    made: list[Daemon] = []

    def make(*extra: str, base_dir: pathlib.Path | None = None, start: bool = True) -> Daemon:
        daemon = Daemon(new_name(), base_dir or base / f"d{len(made)}")
        made.append(daemon)
        _every_daemon.append(daemon)
        if start:
            daemon.start(*extra)
        return daemon

    try:
        yield make
    finally:
        for daemon in reversed(made):
            daemon.cleanup()
    for daemon in made:
        assert not mounted(daemon.attr_dir), f"{daemon.attr_dir} is still mounted"


def cleanup_every_daemon() -> None:
    """The safety net behind the factories' own tear-down."""
    for d in _every_daemon:
        d.cleanup()


# -- clients ------------------------------------------------------------------------


class Client(abc.ABC):
    """One way a runtime reaches the node.  Failures raise OSError(errno)."""

    #: Whether HOT/EVICT/SHARE can carry a caller-chosen target_step.
    sends_target = True

    @abc.abstractmethod
    def step(self, n: int) -> None: ...

    @abc.abstractmethod
    def block(self, kind: str, va: int, length: int, target: int) -> None: ...

    @abc.abstractmethod
    def weights(self, values: tuple[int, ...]) -> None: ...

    @abc.abstractmethod
    def telemetry(self) -> dict[str, int]: ...

    def do(self, op: Op) -> None:
        kind, *args = op
        if kind == "step":
            self.step(*args)
        elif kind == "weights":
            self.weights(*args)
        else:
            self.block(kind, *args)

    def adapt(self, ops: list[Op]) -> list[Op]:
        """The operations as this client can express them."""
        if self.sends_target:
            return ops
        return [(op[0], op[1], op[2], 0) if op[0] in ("hot", "evict", "share") else op
                for op in ops]

    def close(self) -> None:  # noqa: B027 - deliberately not abstract: most hold nothing open
        pass


class CClient(Client):
    """tests/c/kvclient, one process per command."""

    def __init__(self, node: pathlib.Path, exe: pathlib.Path) -> None:
        self.node, self.exe = node, exe

    def run(self, *args: Any) -> str:
        r = subprocess.run([str(self.exe), str(self.node), *map(str, args)],
                           capture_output=True, text=True, timeout=60)
        out = r.stdout.strip()
        if r.returncode == 1 and out.startswith("error "):
            name = out.split()[1]
            raise OSError(getattr(errno, name), name)
        assert r.returncode == 0, f"kvclient {args}: exit {r.returncode}: {out} {r.stderr}"
        return out

    def step(self, n: int) -> None:
        assert self.run("step", n) == "ok"

    def block(self, kind: str, va: int, length: int, target: int) -> None:
        assert self.run(kind, hex(va), length, target) == "ok"

    def weights(self, values: tuple[int, ...]) -> None:
        assert self.run("weights", *values) == "ok"

    def telemetry(self) -> dict[str, int]:
        lines = self.run("telemetry").splitlines()
        return {k: int(v) for k, v in (line.split("=") for line in lines)}


class _Step(ctypes.Structure):
    _fields_ = [("step", ctypes.c_uint64)]


class _Block(ctypes.Structure):
    _fields_ = [("va", ctypes.c_uint64), ("len", ctypes.c_uint64), ("target_step", ctypes.c_uint64)]


class _Weights(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint32) for f in WEIGHT_FIELDS]


class _Telemetry(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in FIELDS[:9]] + [(f, ctypes.c_uint32) for f in WEIGHT_FIELDS]


class FcntlClient(Client):
    """What a Python runtime's wrapper does: os.open, ctypes structs, fcntl.ioctl."""

    def __init__(self, node: pathlib.Path) -> None:
        self.fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)

    def step(self, n: int) -> None:
        fcntl.ioctl(self.fd, STEP, _Step(n))

    def block(self, kind: str, va: int, length: int, target: int) -> None:
        fcntl.ioctl(self.fd, BLOCK[kind][0], _Block(va, length, target))

    def weights(self, values: tuple[int, ...]) -> None:
        fcntl.ioctl(self.fd, WEIGHTS, _Weights(*values))

    def telemetry(self) -> dict[str, int]:
        t = _Telemetry()
        assert ctypes.sizeof(t) == 96
        fcntl.ioctl(self.fd, TELEMETRY, t)  # filled in place
        return {f: getattr(t, f) for f in FIELDS}

    def close(self) -> None:
        os.close(self.fd)


class KvCpuClient(Client):
    """kvcpu_dev.client.KvCpu, the class runtimes can import."""

    sends_target = False

    def __init__(self, node: pathlib.Path) -> None:
        from kvcpu_dev.client import KvCpu  # noqa: PLC0415

        self.dev = KvCpu(node)

    def step(self, n: int) -> None:
        self.dev.step(n)

    def block(self, kind: str, va: int, length: int, target: int) -> None:
        if kind == "prefetch":
            self.dev.prefetch(va, length, target)
        else:
            {"hot": self.dev.mark_hot, "evict": self.dev.evict,
             "share": self.dev.share_prefix}[kind](va, length)

    def weights(self, values: tuple[int, ...]) -> None:
        self.dev.set_weights(*values)

    def telemetry(self) -> dict[str, int]:
        return self.dev.telemetry()._asdict()

    def close(self) -> None:
        self.dev.close()


_STRERROR = {os.strerror(e): e for e in errno.errorcode}


class KvctlClient(Client):
    """The kvctl command line, one process per command."""

    sends_target = False
    LABELS = {"hot": "HOT", "evict": "EVICT", "prefetch": "PREFETCH", "share": "SHARE"}

    def __init__(self, node: pathlib.Path, exe: str) -> None:
        self.node, self.exe = node, exe

    def run(self, *args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.exe, "--device", str(self.node), *map(str, args)],
                              capture_output=True, text=True, timeout=60)

    def command(self, label: str, *args: Any) -> None:
        r = self.run(*args)
        if r.returncode == 1 and (m := re.fullmatch(rf"ioctl {label}: (.+)\n", r.stderr)):
            raise OSError(_STRERROR[m.group(1)], m.group(1))
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), f"kvctl {args}: {r}"

    def step(self, n: int) -> None:
        self.command("STEP", "step", n)

    def block(self, kind: str, va: int, length: int, target: int) -> None:
        extra = (target,) if kind == "prefetch" else ()
        self.command(self.LABELS[kind], kind, hex(va), length, *extra)

    def weights(self, values: tuple[int, ...]) -> None:
        r = self.run("weights", *(f"{k}={v}" for k, v in zip(WEIGHT_FIELDS, values)))
        assert r.returncode == 0, f"kvctl weights: {r}"

    def telemetry(self) -> dict[str, int]:
        r = self.run("telemetry", "--json")
        assert r.returncode == 0, f"kvctl telemetry --json: {r}"
        result: dict[str, int] = json.loads(r.stdout)
        return result


# -- scenarios: the same checks through every client ----------------------------------

VA = 0x7F0000001000
SCENARIOS: dict[str, list[Op]] = {
    "step": [("step", 7), ("step", U64_MAX), ("step", 0)],
    **{kind: [(kind, VA, 4096, 12), (kind, U64_MAX, U64_MAX, U64_MAX)] for kind in BLOCK},
    **{f"{kind}-zero-len": [("step", 3), (kind, 0x2000, 16, 5), (kind, 0x9000, 0, 8)]
       for kind in BLOCK},
    "weights": [("weights", (1, 2, 3, 4, 5, 6)),
                ("weights", (U32_MAX, 0, 255, 256, 65536, U32_MAX))],
    "mixed": [("step", 1), ("hot", VA, 64, 0), ("prefetch", VA + 4096, 128, 9), ("step", 2),
              ("share", VA + 8192, 256, 0), ("evict", VA, 64, 0), ("weights", (9, 8, 7, 6, 5, 4))],
}


def check_scenario(dev: Daemon, client: Client, ops: list[Op]) -> None:
    """Run the operations through ``client``: after each, the errno and the
    telemetry of ``dev`` must be the spec's; at the end the client's own
    telemetry and the --trace log (decoded commands, register writes in
    order) too."""
    ops = client.adapt(ops)
    mark = dev.mark()
    spec = SpecDevice(dev.telemetry())
    for op in ops:
        want = spec.apply(op)
        assert errno_of(client.do, op) == want, f"{op}: wrong errno"
        assert dev.telemetry() == spec.telemetry, f"after {op}"
    assert client.telemetry() == spec.telemetry
    assert dev.trace(since=mark) == spec.trace
    seqs = parse_trace(dev.log(since=mark))[1]
    if seqs:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "write numbers skip"
