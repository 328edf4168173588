"""Facts the C fast path and the Python side both need, stated once.

build.py turns every ``KV_*`` name here into a C define for the fast path
(as it does for regs.py's registers), and the cffi binding exposes the same
names as ``lib.KV_*``, so the two sides cannot drift apart.  Python reads
them from this module, never as literals.  No cffi and no numpy here:
kvctl and the recording format import it.
"""

from __future__ import annotations

import enum

from . import abi


class EventKind(enum.IntEnum):
    """What an event in the ring (and a record in a recording) is."""

    IOCTL = 1  # a command through the node (or in-process)
    STORE = 2  # a sysfs weight store: cmd is the weight's index
    RESET = 3  # a function-level reset: the power-on state
    UNPLUG = 4  # surprise removal: every command fails ENODEV
    REPLUG = 5  # the device is back
    STEPS = 6  # a run of plain STEPs the fast path coalesced (never recorded)


class FaultMode(enum.IntEnum):
    """How an injected fault rule fires (its text name is the lower-case name)."""

    COUNT = 1  # the next n matching commands
    EVERY = 2  # every n-th matching command
    PROBABILITY = 3  # each with probability prob / 2**32
    ALWAYS = 4  # every matching command


class Advice(enum.IntEnum):
    """The madvise(2) advice values of the linux-mm RFC (kvcpu-dev run):
    what a program passes, and what an event that came through madvise
    carries in its ``aux`` field (0: it came through the node)."""

    HOT = 104  # MADV_KV_HOT: MARK_HOT on the range
    EVICT = 105  # MADV_KV_EVICT: EVICT on the range
    PREFETCH = 106  # MADV_KV_PREFETCH: len = (W << 32) | t; STEP_ADVANCE to t, window W


#: kvctl's names for the commands (the reference tool's ioctl labels), used
#: by recordings, fault rules, metrics and ``kvctl log``.
COMMAND_NAMES = {
    abi.KV_CPU_STEP_ADVANCE: "STEP",
    abi.KV_CPU_MARK_HOT: "HOT",
    abi.KV_CPU_EVICT: "EVICT",
    abi.KV_CPU_PREFETCH: "PREFETCH",
    abi.KV_CPU_SHARE_PREFIX: "SHARE",
    abi.KV_CPU_SET_WEIGHTS: "WEIGHTS",
    abi.KV_CPU_GET_TELEMETRY: "TELEMETRY",
}


def command_number(name: str) -> int:
    """STEP, STEP_ADVANCE or KV_CPU_STEP_ADVANCE (any case) -> its number."""
    key = name.upper()
    for number, short in COMMAND_NAMES.items():
        command = abi.BY_NUMBER[number]
        if key in (short, command.short, command.name):
            return number
    raise ValueError(f"unknown command {name!r} (one of {', '.join(COMMAND_NAMES.values())})")


#: A run of coalesced STEPs is published once this old, so the model keeps
#: a decode loop's cadence; the daemon looks at the ring this often while
#: commands come.
RUN_PUBLISH_NS = 10_000_000
#: A run this long is a flood's ...
FLOOD_RUN_STEPS = 256
#: ... and is published only once this old: a flood costs the consumer one
#: event per this period, and the daemon looks only this often meanwhile.
FLOOD_RUN_PUBLISH_NS = 100_000_000


def c_defines() -> dict[str, int]:
    """Every fact above that the C fast path uses, as ``KV_*`` defines."""
    defines = {f"KV_EV_{kind.name}": int(kind) for kind in EventKind}
    defines.update({f"KV_FAULT_{mode.name}": int(mode) for mode in FaultMode})
    defines.update({f"KV_MADV_{advice.name}": int(advice) for advice in Advice})
    defines.update(KV_RUN_NS=RUN_PUBLISH_NS, KV_RUN_FLOOD=FLOOD_RUN_STEPS, KV_RUN_FLOOD_NS=FLOOD_RUN_PUBLISH_NS)
    return defines
