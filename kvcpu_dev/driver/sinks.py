"""What the ring delivers to: the declared interfaces of the corridor.

Every command the device answered reaches, in order, through the one ring
reader (reader.py):

- the device model, a ``ModelSink``: the command's register writes (the
  model sees only BAR0, as the hardware would), runs of coalesced STEPs,
  resets and lost events; and the model's background work, which the
  reader and the daemon's loop drive;
- ``Listener``s: the recorder and the metrics' counters, which take the
  commands whole, a batch at a time, or, for coalesced runs, their counts.

The reader calls exactly these methods and nothing else; nothing is probed
for.  The model steers the fast path in one way only: ``coalesce_limit``,
which the reader passes on when it grants the fast path to coalesce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .events import CommandBatch

#: No STEP may be coalesced (a hint is still being applied).
NO_COALESCING = 0
#: Any STEP that fits the directory's 32-bit step field may be.
STEP_FIELD_LIMIT = 1 << 32


class ModelSink(Protocol):
    """The device behind BAR0 (model/device.py's DeviceModel, or NoModel)."""

    def at(self, t_ns: int) -> None:
        """The writes that follow happen at CLOCK_MONOTONIC ``t_ns``: when
        their command reached the device, not when it was drained."""

    def mmio_write(self, offset: int, value: int) -> None:
        """One 64-bit register write, in the driver's order."""

    def take_commands(self, times: np.ndarray, nregs: np.ndarray, offsets: np.ndarray, values: np.ndarray,
                      start: int, end: int) -> int:
        """Commands from ``start`` (each ``nregs[k]`` writes of ``offsets[k]``,
        ``values[k]``, at ``times[k]``), as many as it applies at once, a
        prefix before ``end``; returns where it stopped.  The reader gives
        the rest write by write (at, mmio_write), then offers the next."""

    def mmio_write_steps(self, offset: int, count: int, last: int, top: int, t_ns: int | None) -> bool:
        """``count`` writes of ``offset`` (the STEP doorbell) that the fast
        path coalesced: the last ``last``, the largest ``top``, the last
        at ``t_ns``.  True if taken; False if the run was not arithmetic
        for the model after all (it is then out of sync, and says so)."""

    def coalesce_limit(self) -> int:
        """The lowest step a coalesced run must stay below for the model
        to take it whole (its next deadline); NO_COALESCING while it needs
        each STEP.  Holds until a command other than a plain STEP comes."""

    def reset(self) -> None:
        """A function-level reset: the device starts over."""

    def events_lost(self, count: int) -> None:
        """``count`` commands never reached the model (a lossy ring
        overflowed, or delivering them failed)."""

    def busy(self) -> bool:
        """A hint is only partly applied: the next write must wait."""

    def work(self, budget_s: float | None = None) -> bool:
        """Go on with it for about ``budget_s`` (None: to its end); True
        once nothing is left."""

    def has_pending(self) -> bool:
        """A STEP's scan waits to run."""

    def run_pending(self) -> bool:
        """Run it (off the ioctl's path, as on silicon); True if one ran."""


class Listener(Protocol):
    """Something that sees every command the device answered."""

    @property
    def whole_commands(self) -> bool:
        """Takes every command as its own event (a recorder): while it is
        attached the fast path does not coalesce STEPs."""

    @property
    def backlog(self) -> int:
        """At most this many answered commands may wait for it (0: no
        bound): a recorder's file then misses at most that many to a kill."""

    @property
    def run_bounds_ns(self) -> Sequence[int]:
        """The histogram bounds (ns, ascending) a coalesced run's service
        times come bucketed by (its step_run's per_bucket)."""

    def take(self, batch: CommandBatch) -> None:
        """Commands, whole, in order (read them during the call only)."""

    def step_run(self, count: int, service_ns: int, per_bucket: Sequence[int]) -> None:
        """``count`` successful STEPs the fast path coalesced: their
        service times summed, and bucketed by run_bounds_ns (+Inf last)."""


class NoModel:
    """``--no-model``: registers only, as the reference driver's mock."""

    def at(self, t_ns: int) -> None:
        pass

    def mmio_write(self, offset: int, value: int) -> None:
        pass

    def take_commands(self, times: np.ndarray, nregs: np.ndarray, offsets: np.ndarray, values: np.ndarray,
                      start: int, end: int) -> int:
        return start  # none at once: the writes come one by one, to nothing

    def mmio_write_steps(self, offset: int, count: int, last: int, top: int, t_ns: int | None) -> bool:
        return True

    def coalesce_limit(self) -> int:
        return (1 << 64) - 1  # nothing here needs a STEP whole

    def reset(self) -> None:
        pass

    def events_lost(self, count: int) -> None:
        pass

    def busy(self) -> bool:
        return False

    def work(self, budget_s: float | None = None) -> bool:
        return True

    def has_pending(self) -> bool:
        return False

    def run_pending(self) -> bool:
        return False
