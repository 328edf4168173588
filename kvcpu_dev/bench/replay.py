"""Replaying a recording: against a device node, or through the device
model in-process on the simulated clock.

Against a node (``kvctl replay FILE``):

- every ioctl record is re-issued on one open descriptor, with the
  recorded payload (GET_TELEMETRY: a 96-byte buffer), at the recorded pace
  scaled by ``speed`` (None: as fast as possible);
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
next command.  The model configuration is ``--config``'s, else the one the
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..device import abi
from . import kvrec as fmt

#: model_stats keys measured on the wall clock: not reproducible.
WALL_CLOCK_KEYS = ("scan_ns_total", "scan_ns_max", "scan_ns_avg", "last_scan_scan_ns")


class Mismatch(Exception):
    """The first difference found by --check, as one line."""


@dataclass
class Result:
    commands: int = 0
    stores: int = 0
    controls: int = 0
    skipped_faulted: int = 0
    skipped_no_attrs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


def _errname(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err)) if err else "ok"


def start_telemetry(rec: fmt.Recording) -> dict[str, int] | None:
    for r in rec.records:
        if r.kind == fmt.KIND_MARK and r.meta.get("mark") == "start":
            return r.meta.get("telemetry")
        if r.kind != fmt.KIND_MARK:
            return None
    return None


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


def replay_node(rec: fmt.Recording, device: str, *, speed: float | None = None, check: bool = False,
                attr_dir: pathlib.Path | None = None,
                on_command: Callable[[fmt.Record, int], None] | None = None) -> Result:
    """Re-issue ``rec`` against the node ``device``; raises Mismatch (with
    ``check``) or OSError (the node cannot be opened)."""
    res = Result()
    records = [r for r in rec.records if r.kind != fmt.KIND_MARK]
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        if check:
            want = start_telemetry(rec)
            if want is not None:
                got_err, buf = _issue(fd, fmt.Record(0, 0, fmt.KIND_IOCTL, abi.KV_CPU_GET_TELEMETRY,
                                                    0, 0, b""))
                if got_err:
                    raise Mismatch(f"reading the device's telemetry before replaying: {_errname(got_err)}")
                got = dict(zip(abi.TELEMETRY_FIELDS, abi.TELEMETRY_INFO.codec.unpack(buf)))
                diff = [k for k in abi.TELEMETRY_FIELDS if got.get(k) != want.get(k)]
                if diff:
                    k = diff[0]
                    raise Mismatch(f"the device does not start in the recorded state: {k} is {got[k]}, "
                                   f"the recording started at {want.get(k)}")
        t_rec0 = records[0].t_ns if records else 0
        t0 = time.monotonic()
        for r in records:
            if speed is not None:
                wait = t0 + (r.t_ns - t_rec0) / 1e9 / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            if r.kind == fmt.KIND_IOCTL:
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


def model_config_for(rec: fmt.Recording, config_path: pathlib.Path | None) -> Any:
    """--config's, else the recorded one, else defaults; clock sim."""
    import tomllib

    from ..model import ModelConfig

    if config_path is not None:
        base = ModelConfig.from_toml(config_path)
    else:
        text = next((r.meta.get("model_config") for r in rec.records
                     if r.kind == fmt.KIND_MARK and r.meta.get("mark") == "start"
                     and r.meta.get("model_config")), None)
        base = ModelConfig.from_dict(tomllib.loads(text), "the recording") if text else ModelConfig()
    return base.replace(clock="sim")


def replay_model(rec: fmt.Recording, config: Any, timing: bool = False) -> dict[str, Any]:
    """The model's stats after the recording's register writes."""
    from ..model import DeviceModel

    model = DeviceModel(config)
    for r in rec.records:
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


def reset_note(rec: fmt.Recording) -> str | None:
    """Why ``replay_model``'s statistics may look empty: a reset is the
    power-on state, so they count only what came after the last one.  One
    line, or None for a recording without a reset."""
    resets = [i for i, r in enumerate(rec.records) if r.kind == fmt.KIND_RESET]
    if not resets:
        return None
    last = resets[-1]
    after = sum(1 for r in rec.records[last + 1:] if r.writes)
    before = sum(1 for r in rec.records[:last] if r.writes)
    which = f"its last reset (#{rec.records[last].seq}, {len(resets)} in all)" if len(resets) > 1 \
        else f"its reset (#{rec.records[last].seq})"
    if not after:
        return (f"the recording ends with {which}: these are the power-on statistics; the {before} "
                "commands with register writes before it are not in them")
    return f"these statistics count the {after} commands with register writes after {which} only"
