"""The daemon's recorder: a listener on the event ring writing kvrec.py's
format, and how the root daemon opens the file it is told to write.

Paths come from root's command line (``--record``) or from the ``record``
attribute, which the node's owner (root) may write, and, with
``--control-group``, the node's group.  A path from root is treated as
hostile:

- it must be absolute, and its directory must pass safe_paths.secure_dir
  (no symlink on the way owned by someone else, no directory on the way
  writable by others unless sticky, the directory itself owned by root
  (or the daemon's user) and not group- or world-writable);
- a new file is created relative to that directory's descriptor with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600 whatever the umask; if its
  header or the session's start mark cannot be written (a full disk), the
  start fails and that file, and only it (the same inode), is removed;
- an existing file is appended to only if it is a regular file of the
  daemon's user, with one link, not writable by group or others, and
  starts with a recording header of this version (an empty file gets
  one); nothing in it is ever truncated or rewritten: a torn record at its
  end (a crash mid-write) stays, is logged, and readers skip it;

A path written to the attribute by anyone else (a group member) is opened
with that caller's rights instead (``open_recording``'s ``who``): the
directory must be reachable and writable by the caller's uid and groups by
mode bits (no ACL, no symlink on the way), a new file is the caller's, an
existing one is appended to only if it is the caller's and writable by
them, and its name must end in ``.kvrec`` (programs that read files by
directory, ``/etc/cron.d``, ``sudoers.d``, ignore names with a dot).
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..device.sysfs import IN_PROCESS, Caller
from ..driver.events import AT
from ..errors import StartError
from ..safe_paths import W_OK, Who, caller_dir, may, secure_dir, who_called
from . import kvrec as fmt

if TYPE_CHECKING:
    from ..driver.events import CommandBatch, Event
    from ..driver.handle import NativeDriver

log = logging.getLogger("kvcpu_dev")

_COMM_CACHE = 1024
#: See Recorder.backlog: the device's ring holds at most this many
#: answered commands while a recording is on.
RECORD_BACKLOG = 256


class Opened:
    """A recording's O_APPEND descriptor, until its session has started:
    ``discard()`` closes it and removes the file if this start created it
    (by identity: the inode the descriptor holds, never another file put
    under its name meanwhile); ``keep()`` lets the recorder have it."""

    def __init__(self, fd: int, dfd: int, name: str, created: bool):
        self.fd, self._dfd, self._name, self.created = fd, dfd, name, created

    def keep(self) -> int:
        os.close(self._dfd)
        return self.fd

    def discard(self) -> None:
        try:
            if self.created:
                mine = os.fstat(self.fd)
                try:
                    there = os.stat(self._name, dir_fd=self._dfd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                        os.unlink(self._name, dir_fd=self._dfd)
        finally:
            os.close(self.fd)
            os.close(self._dfd)


def open_recording(path: pathlib.Path, who: Who | None = None) -> Opened:
    """``path`` opened to append records after a valid header; raises
    StartError with one line (its errno ENOSPC on a full disk).

    ``who``: a caller other than root (a member of the node's group, with
    --control-group), for whom root creates a file only in a directory
    ``who`` may reach and write (safe_paths.caller_dir), gives it to
    ``who``, and appends only to a file of ``who``'s that ``who`` may
    write: a control never makes root touch what its caller could not."""
    path = pathlib.Path(path)
    if not path.is_absolute():
        raise StartError(f"recording path must be absolute: {path}")
    if path.name in ("", ".", ".."):
        raise StartError(f"not a file name: {path}")
    if who is None:
        dfd = secure_dir(path.parent, create=False, what="recording directory")
        if dfd is None:
            raise StartError(f"recording directory {path.parent} does not exist")
    else:
        dfd = caller_dir(path.parent, who)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path.name, flags | os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd)
        except FileExistsError:
            opened = Opened(_open_existing(path, dfd, flags, who), dfd, path.name, created=False)
        else:
            opened = Opened(fd, dfd, path.name, created=True)
    except OSError as exc:
        os.close(dfd)
        raise StartError(f"cannot record to {path}: {exc.strerror or exc}", exc.errno or errno.EINVAL) from None
    except BaseException:
        os.close(dfd)
        raise
    try:
        if opened.created:
            os.fchmod(opened.fd, 0o600)
            if who is not None:
                _give(opened.fd, dfd, who)
        os.set_blocking(opened.fd, True)
        if os.fstat(opened.fd).st_size == 0:  # new, or an empty file of ours
            _write_all(opened.fd, fmt.header_bytes({"created_by": "kvcpu-dev"}))
    except OSError as exc:
        opened.discard()
        raise StartError(f"cannot record to {path}: {exc.strerror or exc}", exc.errno or errno.EINVAL) from None
    except BaseException:
        opened.discard()
        raise
    return opened


def _give(fd: int, dfd: int, who: Who) -> None:
    """A new file to its caller, with the group the kernel would give it
    (the directory's if set-group-ID, else the caller's)."""
    parent = os.fstat(dfd)
    gid = parent.st_gid if parent.st_mode & stat.S_ISGID else who.gid
    try:
        os.fchown(fd, who.uid, gid)
    except PermissionError:
        raise StartError(f"the daemon (uid {os.geteuid()}) cannot give a file to uid {who.uid}; "
                         "a recording for another user needs a daemon running as root") from None


def _open_existing(path: pathlib.Path, dfd: int, flags: int, who: Who | None) -> int:
    try:
        fd = os.open(path.name, flags | os.O_RDWR, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StartError(f"{path} is a symlink; refusing") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StartError(f"{path} exists and is not a regular file; refusing")
        owner = os.geteuid() if who is None else who.uid
        if st.st_uid != owner or st.st_nlink != 1 or st.st_mode & 0o022:
            whose = "ours" if who is None else f"uid {who.uid}'s"
            raise StartError(f"{path} exists and is not a private file of {whose} "
                             "(owner, one link, not writable by others); refusing")
        if who is not None and not may(st, who, W_OK):
            raise StartError(f"{path} is not writable by uid {who.uid}; refusing")
        if st.st_size:
            _check_appendable(path, fd, st.st_size)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_appendable(path: pathlib.Path, fd: int, size: int) -> None:
    """A recording of this version; what it ends with is logged, never cut:
    a later session is appended after it and readers skip what is torn."""
    with os.fdopen(os.dup(fd), "rb") as f:
        try:
            header = fmt.read_header(f)
        except fmt.FormatError as exc:
            raise StartError(f"{path} exists and is not a recording to append to: {exc}") from None
    if header.version != fmt.VERSION:
        raise StartError(f"{path} is a recording of format version {header.version}, which this "
                         f"kvcpu-dev reads but does not append to; record to a new file")
    torn = fmt.torn_tail(fd, header.size, size)
    if torn:
        log.warning("%s: appending after %d bytes that are not a whole record (a crash or a full disk "
                    "mid-write?); they are kept, and readers skip them", path, torn)
    elif torn is None:
        log.warning("%s: its end is not a whole record (damaged?); appending after it, nothing is "
                    "rewritten, and readers skip what they cannot read", path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


_S, _T, _K, _C, _P, _E, _SZ, _NR, _F, _L, _SV, _AX, _RS, _D, _RO, _RV = (AT[name] for name in (
    "seq", "t_ns", "kind", "cmd", "pid", "err", "size", "nregs", "fault", "latency_us", "service_ns", "aux",
    "reg_seq", "data", "reg_off", "reg_val"))
_FRAME_HEAD = struct.Struct("<4sII")
_CRC = struct.Struct("<I")


def frames(rows: Iterable[tuple[Any, ...]], comm_of: Callable[[int], bytes]) -> bytes:
    """The records of ring events as unpacked rows (CommandBatch.rows),
    framed: what kvrec.encode makes of each, without decoding an Event
    first (2.3x cheaper a command; tests/test_bench_record.py holds the two
    to the same bytes)."""
    body_head, write, advice, sync, crc = fmt.BODY.pack, fmt.WRITE.pack, fmt.ADVICE.pack, fmt.SYNC, zlib.crc32
    out: list[bytes] = []
    for r in rows:
        nregs, size, aux, reg_seq, pid = r[_NR], r[_SZ], r[_AX], r[_RS], r[_P]
        comm = comm_of(pid)[:255] if pid > 0 else b""
        body = b"".join((
            body_head(r[_S], r[_T], r[_C], pid & 0xFFFF_FFFF, r[_E], r[_F], r[_L], r[_SV], r[_K], nregs, size, len(comm)),
            r[_D][:size], *[write(reg_seq + j, r[_RO + j], r[_RV + j]) for j in range(nregs)], comm,
            advice(aux) if aux else b""))
        head = _FRAME_HEAD.pack(sync, len(body), crc(body))
        out += (head, _CRC.pack(crc(head)), body)
    return b"".join(out)


class Recorder:
    """A listener: every command answered, one record, written as the
    batch it came in is taken."""

    #: A recording holds every command as its own record: while one is
    #: attached, the fast path does not coalesce STEPs.
    whole_commands = True
    #: Commands answered but not yet in the file: what a kill -9 may take
    #: from it (the fast path waits beyond this; ~5 ms of a flood).
    backlog = RECORD_BACKLOG
    run_bounds_ns: tuple[int, ...] = ()

    def __init__(self, fd: int, path: pathlib.Path, device_name: str):
        self.fd = fd
        self.path = path
        self.device_name = device_name
        self.events = 0
        self.lost = 0
        self.error: str | None = None
        self._next_seq = 0
        self._comms: dict[int, bytes] = {}

    def _comm(self, pid: int) -> bytes:
        comm = self._comms.get(pid)
        if comm is None:
            if len(self._comms) >= _COMM_CACHE:
                self._comms.clear()
            try:
                with open(f"/proc/{pid}/comm", "rb") as f:
                    comm = f.read().strip()
            except OSError:  # gone already, or another pid namespace
                comm = b""
            self._comms[pid] = comm
        return comm

    def take(self, batch: CommandBatch) -> None:
        if self.fd < 0:
            return
        seqs = batch.columns["seq"]
        self._count_lost(int(seqs[0]), int(seqs[-1]), len(seqs))
        self._append(frames(batch.rows(), self._comm), len(seqs))

    def command(self, ev: Event) -> None:
        """One decoded command (what take does, for a single Event)."""
        if self.fd < 0:
            return
        self._count_lost(ev.seq, ev.seq, 1)
        comm = self._comm(ev.pid) if ev.pid > 0 else b""
        self._append(fmt.encode(ev.seq, ev.t_ns, ev.kind, ev.cmd, ev.pid, ev.errno, ev.data, ev.writes,
                                ev.fault, ev.latency_us, ev.service_ns, comm, ev.aux), 1)

    def _count_lost(self, first: int, last: int, count: int) -> None:
        """Sequence numbers skipped before and within commands first..last
        (the ring's order is the sequence's: only a lossy ring skips)."""
        if self._next_seq and first != self._next_seq:
            self.lost += first - self._next_seq
        self.lost += last - first + 1 - count
        self._next_seq = last + 1

    def _append(self, data: bytes, count: int) -> None:
        """A batch's records in one write(2): a kill leaves whole batches
        and at most one torn at the end, which readers skip."""
        try:
            _write_all(self.fd, data)
        except OSError as exc:  # a full disk must not take the device down
            self.error = exc.strerror or str(exc)
            log.warning("recording to %s stopped: %s", self.path, self.error)
            self.close()
            return
        self.events += count

    def step_run(self, count: int, service_ns: int, per_bucket: Sequence[int]) -> None:
        raise AssertionError("a recorder takes whole commands: no run is coalesced while it listens")

    def write_mark(self, kind: str, **meta: Any) -> None:
        if self.fd >= 0:
            try:
                _write_all(self.fd, fmt.mark(kind, device=self.device_name, **meta))
            except OSError as exc:
                self.error = exc.strerror or str(exc)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RecordControl:
    """Starting and stopping the recorder on a running device; the
    ``record`` attribute's two halves."""

    def __init__(self, device: NativeDriver, name: str, model_config: Callable[[], str | None]):
        self.device = device
        self.name = name
        self.model_config = model_config
        self.recorder: Recorder | None = None
        self.last: Recorder | None = None
        #: Why the last write to the attribute was refused (the writer sees
        #: only EINVAL; kvctl reads this line back to say why).
        self.last_error: str | None = None

    def start(self, path: pathlib.Path, who: Who | None = None) -> None:
        """Record to ``path``: as root's, or for ``who``, a caller other
        than root, with ``who``'s rights (open_recording)."""
        if self.recorder is not None:
            raise StartError(f"already recording to {self.recorder.path}; stop first")
        if who is not None and not path.name.endswith(".kvrec"):
            raise StartError("a recording started by a user other than root must be named *.kvrec")
        opened = open_recording(path, who)
        rec = Recorder(opened.fd, path, self.name)
        # What happened before the start goes to the other listeners only,
        # and the fast path stops coalescing STEPs: a recording wants each.
        self.device.add_listener(rec)
        try:  # a session that cannot say where it starts does not start
            _write_all(rec.fd, fmt.mark("start", device=self.name, telemetry=self.device.telemetry(),
                                        model_config=self.model_config()))
        except OSError as exc:
            self.device.reader.remove_listener(rec)
            rec.fd = -1
            opened.discard()
            raise StartError(f"cannot record to {path}: {exc.strerror or exc}",
                             exc.errno or errno.EINVAL) from None
        opened.keep()
        self.recorder = rec
        log.info("recording %s to %s", self.name, path)

    def stop(self) -> None:
        rec = self.recorder
        if rec is None:
            return
        if self.device.handle is not None:
            self.device.reader.remove_listener(rec)
        rec.write_mark("stop", events=rec.events, lost=rec.lost)
        rec.close()
        self.recorder = None
        self.last = rec
        log.info("recording to %s stopped (%d events)", rec.path, rec.events)

    def show(self) -> str:
        self.device.drain()  # every command so far is in the file when this returns
        rec = self.recorder
        if rec is not None and rec.fd < 0:  # it failed while writing
            self.recorder, self.last = None, rec
            self.device.reader.remove_listener(rec)
            rec = None
        if rec is None:
            lines = ["state=off"]
            if self.last is not None:
                lines += [f"last_path={self.last.path}", f"last_events={self.last.events}"]
                if self.last.error:
                    lines.append(f"error={self.last.error}")
        else:
            lines = ["state=on", f"path={rec.path}", f"events={rec.events}", f"lost={rec.lost}"]
        if self.last_error:
            lines.append(f"last_error={self.last_error}")
        return "".join(line + "\n" for line in lines)

    def store(self, buf: bytes, caller: Caller = IN_PROCESS) -> None:
        """The ``record`` attribute's write: ``start PATH`` or ``stop``.  A
        start written by anyone but root is checked with the writer's own
        uid and groups (the FUSE request's, groups from /proc)."""
        words = buf.decode(errors="replace").split(maxsplit=1)
        self.last_error = None
        try:
            if words == ["stop"]:
                self.stop()
            elif len(words) == 2 and words[0] == "start":
                who = None if caller.uid == 0 else who_called(caller.uid, caller.gid, caller.pid)
                self.start(pathlib.Path(words[1].strip()), who)
            else:
                raise StartError(f"expected 'start PATH' or 'stop', got {buf[:60]!r}")
        except StartError as exc:
            log.warning("record: %s", exc)
            self.last_error = str(exc)
            raise OSError(exc.errno, str(exc)) from None
