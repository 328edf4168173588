"""Counting the commands the ring carries: the listener behind the
``metrics`` attribute, ``--metrics`` and ``kvctl top``.

Apart from ``metrics`` (the Prometheus exposition) so that a daemon counts
from its first command without loading prometheus-client (3 MB of its
idle RSS, 36 ms of start-up) until someone reads or serves the metrics.
It runs in the daemon's Python thread as the ring is drained, never on the
fast path.
"""

from __future__ import annotations

import bisect
import errno as errno_mod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..device import abi
from . import kvrec as fmt

if TYPE_CHECKING:
    import numpy as np

    from ..driver.events import CommandBatch, Event

#: Batches at least this long are counted in numpy (~35 us a batch; one
#: event decoded and counted in Python, ~3 us).
_VECTOR_MIN = 12

#: Latency histogram bounds, seconds: 100 ns .. 10 s (the fast path holds
#: the device for well under a microsecond; an injected latency is longer).
BUCKETS = (1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
           1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKETS_NS = tuple(round(b * 1e9) for b in BUCKETS)
_CONTROLS = {fmt.KIND_RESET: "reset", fmt.KIND_UNPLUG: "unplug", fmt.KIND_REPLUG: "replug"}


def command_label(cmd: int) -> str:
    return fmt.SHORT.get(cmd, "other")


_STEP = command_label(abi.KV_CPU_STEP_ADVANCE)


def errno_label(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err)) if err else "none"


class CommandStats:
    """Listener: counts per (command, errno), a latency histogram per
    command, faults fired per command, controls, weight stores."""

    def __init__(self) -> None:
        self.commands: dict[tuple[str, str], int] = {}
        self.hist: dict[str, list[int]] = {}  # command -> bucket counts (+Inf last)
        self.hist_sum_ns: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.controls: dict[str, int] = {}
        self.stores = 0

    #: Runs of coalesced STEPs are counted as they come (step_run).
    whole_commands = False
    backlog = 0

    def take(self, batch: CommandBatch) -> None:
        """A batch: one event at a time when small, in numpy when large
        (the two are tied by a differential test)."""
        if len(batch) < _VECTOR_MIN:
            for ev in batch.events():
                self.command(ev)
        else:
            self._count_columns(batch.columns)

    def command(self, ev: Event) -> None:
        """One command, as the specification of what the counters mean."""
        kind = ev.kind
        if kind == fmt.KIND_IOCTL:
            ns = ev.service_ns + ev.latency_us * 1000
            buckets = self._count(command_label(ev.cmd), ev.errno, 1, ns, 1 if ev.fault else 0)
            buckets[bisect.bisect_left(_BUCKETS_NS, ns)] += 1
        elif kind == fmt.KIND_STORE:
            self.stores += 1
        elif kind in _CONTROLS:
            name = _CONTROLS[kind]
            self.controls[name] = self.controls.get(name, 0) + 1

    #: The histogram bounds a coalesced run comes bucketed by (step_run).
    run_bounds_ns = _BUCKETS_NS

    def step_run(self, count: int, service_ns: int, per_bucket: Sequence[int]) -> None:
        """``count`` successful STEPs the fast path coalesced, their service
        times summed and bucketed by run_bounds_ns: counted as __call__
        counts them one by one (no faults: a rule stops coalescing)."""
        self._add_run(_STEP, count, service_ns, 0, per_bucket)

    def _count_columns(self, cols: np.ndarray) -> None:
        """command() for every row of ``cols`` (driver.events.COLUMNS), at
        once."""
        import numpy as np  # the daemon has it loaded; kvctl never counts

        kinds = cols["kind"]
        per_kind = np.bincount(kinds).tolist()
        if len(per_kind) > fmt.KIND_STORE:
            self.stores += per_kind[fmt.KIND_STORE]
        for kind, name in _CONTROLS.items():
            n = per_kind[kind] if kind < len(per_kind) else 0
            if n:
                self.controls[name] = self.controls.get(name, 0) + n
        n_ioctls = per_kind[fmt.KIND_IOCTL] if fmt.KIND_IOCTL < len(per_kind) else 0
        if not n_ioctls:
            return
        fields = ("cmd", "err", "service_ns", "latency_us", "fault")
        if n_ioctls == len(cols):
            cmd, err, service_ns, latency_us, fault = (cols[f] for f in fields)
        else:
            is_ioctl = kinds == fmt.KIND_IOCTL
            cmd, err, service_ns, latency_us, fault = (cols[f][is_ioctl] for f in fields)
        # Grouped by (command, errno) in one sort, each group summed by reduceat.
        keys = (cmd.astype(np.uint64) << np.uint64(32)) | err.astype(np.uint32).astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        ns = (service_ns.astype(np.int64) + latency_us.astype(np.int64) * 1000)[order]
        fired = (fault[order] != 0).astype(np.int64)
        counts = np.diff(np.append(starts, len(keys)))
        width = len(BUCKETS) + 1
        hists = np.bincount(np.repeat(np.arange(0, len(starts) * width, width), counts)
                            + np.searchsorted(_BUCKETS_NS, ns, side="left"),
                            minlength=len(starts) * width).reshape(len(starts), width)
        for key, n, ns_total, faults, per_bucket in zip(
                keys[starts].tolist(), counts.tolist(), np.add.reduceat(ns, starts).tolist(),
                np.add.reduceat(fired, starts).tolist(), hists.tolist()):
            err = key & 0xFFFF_FFFF
            hist = self._count(command_label(key >> 32), err - (err >> 31 << 32), n, ns_total, faults)
            hist[:] = [a + b for a, b in zip(hist, per_bucket)]

    def _add_run(self, name: str, count: int, ns_total: int, fired: int, per_bucket: Sequence[int]) -> None:
        buckets = self._count(name, 0, count, ns_total, fired)
        for i, n in enumerate(per_bucket):
            buckets[i] += n

    def _count(self, name: str, err: int, n: int, ns_total: int, fired: int) -> list[int]:
        """``n`` commands of one kind and errno: their counter, the faults
        that fired and the latency sum; returns the command's histogram
        buckets for the caller to fill."""
        key = (name, errno_label(err))
        self.commands[key] = self.commands.get(key, 0) + n
        if fired:
            self.faults[name] = self.faults.get(name, 0) + fired
        buckets = self.hist.get(name)
        if buckets is None:
            buckets = self.hist[name] = [0] * (len(BUCKETS) + 1)
            self.hist_sum_ns[name] = 0
        self.hist_sum_ns[name] += ns_total
        return buckets
