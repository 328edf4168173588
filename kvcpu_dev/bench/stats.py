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

#: Batches at least this long are counted in numpy (a call of it costs
#: tens of microseconds; one event in Python, about one).
_VECTOR_MIN = 48

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
        self.stores += int(np.count_nonzero(kinds == fmt.KIND_STORE))
        for kind, name in _CONTROLS.items():
            n = int(np.count_nonzero(kinds == kind))
            if n:
                self.controls[name] = self.controls.get(name, 0) + n
        ioctls = cols[kinds == fmt.KIND_IOCTL]
        if not len(ioctls):
            return
        ns = ioctls["service_ns"].astype(np.int64) + ioctls["latency_us"].astype(np.int64) * 1000
        buckets = np.searchsorted(_BUCKETS_NS, ns, side="left")
        keys = np.stack((ioctls["cmd"].astype(np.int64), ioctls["err"].astype(np.int64)), axis=1)
        unique, which = np.unique(keys, axis=0, return_inverse=True)
        which = which.reshape(-1)
        fired = ioctls["fault"] != 0
        for k, (cmd, err) in enumerate(unique.tolist()):
            rows = which == k
            hist = self._count(command_label(cmd), err, int(np.count_nonzero(rows)), int(ns[rows].sum()),
                               int(np.count_nonzero(fired[rows])))
            for bucket, n in enumerate(np.bincount(buckets[rows], minlength=len(hist)).tolist()):
                hist[bucket] += n

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
