"""Replaying a recording: against a device node, or through the device
model in-process on the simulated clock.

Against a node (``kvctl replay FILE``):

- every ioctl record is re-issued on one open descriptor, with the
  recorded payload (GET_TELEMETRY: a 96-byte buffer), at the recorded pace
  scaled by ``speed`` (None: as fast as possible), the pace restarting at
  each session and no pause longer than MAX_PAUSE_S;
- a recorded ioctl number that is none of the seven is never sent (the
  file is not trusted to choose what root asks of a node);
- a command the recording shows refused by an injected fault (a fault id
  and an errno) is not re-issued: it had no effect on the device.
  Injected latency is not reproduced;
- weight stores are re-issued through the attribute files (``w_r``...),
  resets, unplugs and replugs through ``control``, when the node's
  attribute directory is found (a kvcpu-dev node); otherwise skipped and
  counted;
- with ``check``, the device's telemetry before the first command must be
  the recording's at its start (the state it was recorded from), and
  every errno and every GET_TELEMETRY reply must be the recorded one: the
  first difference stops the replay.

Through the model (``kvctl replay FILE --model``): the recorded register
writes (what the device saw, in order) go to a fresh DeviceModel on the
simulated clock, a reset starts it over, and a STEP's scan runs before the
next command.  Both read the recording record by record (kvrec.Reader):
memory does not grow with the file.  The model configuration is ``--config``'s, else the one the
daemon recorded at the start, else the defaults; the clock is always
``sim``.  Same file, same ``model_stats`` bit for bit, apart from the
scan's wall-clock durations (``scan_ns_*``), which are left out unless
asked for.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..device import abi
from . import kvrec as fmt

#: model_stats keys measured on the wall clock: not reproducible.
WALL_CLOCK_KEYS = ("scan_ns_total", "scan_ns_max", "scan_ns_avg", "last_scan_scan_ns")
#: The longest pause a paced replay makes: a longer gap between two records
#: (an idle runtime, or a damaged time) is cut to this, and counted.
MAX_PAUSE_S = 60.0


class Mismatch(Exception):
    """The first difference found by --check, as one line."""


@dataclass
class Result:
    commands: int = 0
    stores: int = 0
    controls: int = 0
    skipped_faulted: int = 0
    skipped_no_attrs: int = 0
    skipped_unknown: int = 0  # ioctl numbers that are none of the seven: never sent
    pauses_cut: int = 0  # gaps longer than MAX_PAUSE_S, cut to it
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


def _errname(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err)) if err else "ok"


def _start_mark(r: fmt.Record) -> dict[str, Any] | None:
    meta = r.meta
    return meta if r.kind == fmt.KIND_MARK and meta.get("mark") == "start" else None


def _issue(fd: int, r: fmt.Record) -> tuple[int, bytes]:
    """One ioctl as recorded: (errno, reply bytes for a read command)."""
    size = abi.ioc_size(r.cmd)
    direction = abi.ioc_dir(r.cmd)
    if size == 0:
        arg: Any = 0
    else:
        arg = bytearray(r.data[:size].ljust(size, b"\0")) if direction & abi.IOC_WRITE else bytearray(size)
    try:
        fcntl.ioctl(fd, r.cmd, arg)  # a bytearray is filled in place
    except OSError as exc:
        return exc.errno or 0, b""
    return 0, bytes(arg) if isinstance(arg, bytearray) and direction & abi.IOC_READ else b""


def _write_attr(attr_dir: pathlib.Path, name: str, text: str) -> None:
    fd = os.open(attr_dir / name, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _check_start(fd: int, want: dict[str, int]) -> None:
    got_err, buf = _issue(fd, fmt.Record(0, 0, fmt.KIND_IOCTL, abi.KV_CPU_GET_TELEMETRY, 0, 0, b""))
    if got_err:
        raise Mismatch(f"reading the device's telemetry before replaying: {_errname(got_err)}")
    got = dict(zip(abi.TELEMETRY_FIELDS, abi.TELEMETRY_INFO.codec.unpack(buf)))
    diff = [k for k in abi.TELEMETRY_FIELDS if got.get(k) != want.get(k)]
    if diff:
        k = diff[0]
        raise Mismatch(f"the device does not start in the recorded state: {k} is {got[k]}, "
                       f"the recording started at {want.get(k)}")


class _Pace:
    """The recorded pace, scaled: each session (a start mark) starts the
    clock again, since sessions appended to one file may lie hours or boots
    apart; a pause longer than MAX_PAUSE_S is cut to it."""

    def __init__(self, speed: float | None, res: Result):
        self.speed, self.res = speed, res
        self.t0 = 0.0
        self.t_rec0: int | None = None

    def restart(self) -> None:
        self.t_rec0 = None

    def wait(self, t_ns: int) -> None:
        if self.speed is None:
            return
        if self.t_rec0 is None:
            self.t_rec0, self.t0 = t_ns, time.monotonic()
            return
        wait = self.t0 + (t_ns - self.t_rec0) / 1e9 / self.speed - time.monotonic()
        if wait > MAX_PAUSE_S:
            self.t0 -= wait - MAX_PAUSE_S  # what follows keeps its pace after the cut
            self.res.pauses_cut += 1
            wait = MAX_PAUSE_S
        if wait > 0:
            time.sleep(wait)


def replay_node(records: Iterable[fmt.Record], device: str, *, speed: float | None = None,
                check: bool = False, attr_dir: pathlib.Path | None = None,
                on_command: Callable[[fmt.Record, int], None] | None = None) -> Result:
    """Re-issue ``records`` (a Recording's, or a Reader) against the node
    ``device``; raises Mismatch (with ``check``) or OSError (the node
    cannot be opened).  Only the seven commands are re-issued: a recorded
    number that is none of them (ENOTTY when recorded) is counted, never
    sent to a node as root."""
    res = Result()
    pace = _Pace(speed, res)
    started = not check  # the state check comes before the first command
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    t0 = time.monotonic()
    try:
        for r in records:
            if r.kind == fmt.KIND_MARK:
                meta = _start_mark(r)
                if meta is not None:
                    if not started:
                        _check_start(fd, meta["telemetry"])
                    pace.restart()
                started = True
                continue
            started = True
            pace.wait(r.t_ns)
            if r.kind == fmt.KIND_IOCTL:
                if r.cmd not in abi.BY_NUMBER:
                    res.skipped_unknown += 1
                    continue
                if r.fault and r.errno:
                    res.skipped_faulted += 1
                    continue
                err, reply = _issue(fd, r)
                res.commands += 1
                if err:
                    res.errors[_errname(err)] = res.errors.get(_errname(err), 0) + 1
                if on_command is not None:
                    on_command(r, err)
                if check:
                    _compare(r, err, reply)
            elif r.kind in (fmt.KIND_STORE, fmt.KIND_RESET, fmt.KIND_UNPLUG, fmt.KIND_REPLUG):
                if attr_dir is None or not (attr_dir / "control").exists():
                    res.skipped_no_attrs += 1
                    continue
                if r.kind == fmt.KIND_STORE:
                    (name, value), = r.fields.items()
                    _write_attr(attr_dir, name, f"{value}\n")
                    res.stores += 1
                else:
                    _write_attr(attr_dir, "control", r.name + "\n")
                    res.controls += 1
        res.seconds = time.monotonic() - t0
    finally:
        os.close(fd)
    return res


def _compare(r: fmt.Record, err: int, reply: bytes) -> None:
    what = f"#{r.seq} {fmt.describe(r).split(None, 3)[-1].split(' -> ')[0]}"
    if err != r.errno:
        raise Mismatch(f"{what}: recorded {_errname(r.errno)}, got {_errname(err)}")
    want = r.reply
    if want and reply != want:
        layout = abi.TELEMETRY_INFO
        a = dict(zip(abi.TELEMETRY_FIELDS, layout.codec.unpack(want)))
        b = dict(zip(abi.TELEMETRY_FIELDS, layout.codec.unpack(reply)))
        k = next(k for k in abi.TELEMETRY_FIELDS if a[k] != b[k])
        raise Mismatch(f"{what}: reply differs: {k} recorded {a[k]}, got {b[k]}")


# -- through the model --------------------------------------------------------------


def recorded_model_config(records: Iterable[fmt.Record]) -> str | None:
    """The model configuration the daemon recorded (the first start mark
    that has one), or None."""
    for r in records:
        meta = _start_mark(r)
        if meta is not None and meta.get("model_config"):
            text: str = meta["model_config"]
            return text
    return None


def model_config_for(recorded: str | None, config_path: pathlib.Path | None) -> Any:
    """--config's, else the recorded one, else defaults; clock sim.
    ValueError (one line) for a configuration the model refuses."""
    import tomllib

    from ..model import ModelConfig

    if config_path is not None:
        base = ModelConfig.from_toml(config_path)
    elif recorded:
        where = "the recording's model configuration"
        try:
            data = tomllib.loads(recorded)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{where}: {exc}") from None
        except RecursionError:
            raise ValueError(f"{where} is nested too deeply") from None
        base = ModelConfig.from_dict(data, where)
    else:
        base = ModelConfig()
    return base.replace(clock="sim")


def replay_model(records: Iterable[fmt.Record], config: Any, timing: bool = False) -> dict[str, Any]:
    """The model's stats after the recording's register writes."""
    from ..model import DeviceModel

    model = DeviceModel(config)
    for r in records:
        if r.kind == fmt.KIND_RESET:
            model.reset()
            continue
        if r.writes and model.has_pending():
            model.run_pending()  # the last STEP's scan, before what follows it
        for _seq, offset, value in r.writes:
            model.mmio_write(offset, value)
    model.run_pending()
    stats = model.stats()
    if not timing:
        for key in WALL_CLOCK_KEYS:
            stats.pop(key, None)
    return stats


class ResetTally:
    """Why ``replay_model``'s statistics may look empty: a reset is the
    power-on state, so they count only what came after the last one.
    Counted as the records stream past (a reader holds a window, not the
    file)."""

    def __init__(self) -> None:
        self.resets = 0
        self.last_seq = 0
        self.before = 0  # commands with register writes before the last reset
        self.after = 0

    def watch(self, records: Iterable[fmt.Record]) -> Iterator[fmt.Record]:
        for r in records:
            if r.kind == fmt.KIND_RESET:
                self.resets += 1
                self.last_seq = r.seq
                self.before += self.after
                self.after = 0
            elif r.writes:
                self.after += 1
            yield r

    def note(self) -> str | None:
        """One line, or None for a recording without a reset."""
        if not self.resets:
            return None
        which = (f"its last reset (#{self.last_seq}, {self.resets} in all)" if self.resets > 1
                 else f"its reset (#{self.last_seq})")
        if not self.after:
            return (f"the recording ends with {which}: these are the power-on statistics; the "
                    f"{self.before} commands with register writes before it are not in them")
        return f"these statistics count the {self.after} commands with register writes after {which} only"
