"""The mock BAR0 register window: what the device sees of each ioctl.

The reference driver, in mock mode, writes 64-bit registers into a zeroed
4 KiB region in place of BAR0.  This module is the register table (the
C fast path's offsets are generated from it), that region and a bounded
trace of the writes.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

BAR0_SIZE = 4096

#: The registers' and the ioctls' integer widths, as masks.
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF

STEP_ADVANCE = 0x0100
BOOST_ADDR = 0x0200
BOOST_LEN = 0x0208
IMEVICT_ADDR = 0x0210
IMEVICT_LEN = 0x0218
PREFETCH_ADDR = 0x0300
PREFETCH_LEN = 0x0308
PREFETCH_STEP = 0x0310
#: Not in the driver's map: the lookahead window W (decode steps) that a
#: madvise(MADV_KV_PREFETCH) hint sets before its STEP_ADVANCE doorbell
#: (kvcpu-dev run; docs/device-model.md, "The lookahead window").
PREFETCH_WINDOW = 0x0318
SHARE_ADDR = 0x0400
SHARE_LEN = 0x0408
WEIGHT_R = 0x0500
WEIGHT_F = 0x0508
WEIGHT_S = 0x0510
WEIGHT_D = 0x0518
EVICT_THRESH = 0x0520
PREFETCH_THRESH = 0x0528

#: Register offset -> name, for traces and logs (and build.py's C defines).
NAMES = {
    STEP_ADVANCE: "STEP_ADVANCE",
    BOOST_ADDR: "BOOST_ADDR",
    BOOST_LEN: "BOOST_LEN",
    IMEVICT_ADDR: "IMEVICT_ADDR",
    IMEVICT_LEN: "IMEVICT_LEN",
    PREFETCH_ADDR: "PREFETCH_ADDR",
    PREFETCH_LEN: "PREFETCH_LEN",
    PREFETCH_STEP: "PREFETCH_STEP",
    PREFETCH_WINDOW: "PREFETCH_WINDOW",
    SHARE_ADDR: "SHARE_ADDR",
    SHARE_LEN: "SHARE_LEN",
    WEIGHT_R: "WEIGHT_R",
    WEIGHT_F: "WEIGHT_F",
    WEIGHT_S: "WEIGHT_S",
    WEIGHT_D: "WEIGHT_D",
    EVICT_THRESH: "EVICT_THRESH",
    PREFETCH_THRESH: "PREFETCH_THRESH",
}

#: The driver's weights at load, in SET_WEIGHTS' field order.
DEFAULT_WEIGHTS = {
    "w_r": 1,
    "w_f": 1,
    "w_s": 2,
    "w_d": 200,
    "evict_thresh": 0x1000,
    "prefetch_thresh": 0xE000,
}

#: SET_WEIGHTS' register writes, in the driver's order (same order).
WEIGHT_REGS = (WEIGHT_R, WEIGHT_F, WEIGHT_S, WEIGHT_D, EVICT_THRESH, PREFETCH_THRESH)

#: Each weight's and threshold's width in bits in the device (HEPC's
#: registers), where the driver's fields are 32 bits: the model holds what
#: fits and kvctl says when a value does not.
WEIGHT_BITS = {"w_r": 8, "w_f": 8, "w_s": 8, "w_d": 8, "evict_thresh": 16, "prefetch_thresh": 16}

_U64 = struct.Struct("<Q")


class RegWrite(NamedTuple):
    seq: int
    offset: int
    value: int

    def __str__(self) -> str:
        name = NAMES.get(self.offset, "?")
        return f"#{self.seq} {name}@{self.offset:#06x} <- {self.value:#x}"


class Bar0:
    """A 4 KiB little-endian register window with a bounded write trace.

    What the device sees of each ioctl, as the reference driver's mock
    keeps it; the device model is told the same writes by whoever drives
    the window (spec.Driver at once, the ring reader after the fact)."""

    def __init__(self, trace_len: int = 4096):
        self.mem = bytearray(BAR0_SIZE)
        self.trace_len = trace_len
        #: The trace as written: (first seq, offset or offsets, values), a
        #: value for a single write, arrays for a batch or a run; spelled
        #: out as RegWrites only when someone reads ``trace`` (rarely:
        #: tests, tools), never on the drain's path.
        self._log: collections.deque[tuple[int, int | Sequence[int] | np.ndarray,
                                           Sequence[int] | np.ndarray]] = collections.deque()
        self._logged = 0  # writes in _log
        self._spelled: collections.deque[RegWrite] | None = None
        self.seq = 0
        #: Called with each write (--trace), so a log shows the command
        #: and then its writes.
        self.observer: Callable[[RegWrite], None] | None = None

    def write64(self, offset: int, value: int) -> None:
        self.replay(self.seq + 1, offset, value)

    def replay(self, seq: int, offset: int, value: int) -> None:
        """A write numbered elsewhere (the C fast path's BAR0, via its
        event ring): the same effects, under that number."""
        _U64.pack_into(self.mem, offset, value)
        self.seq = seq
        self._note(seq, offset, (value,))
        if self.observer is not None:
            self.observer(RegWrite(seq, offset, value))

    def replay_run(self, first_seq: int, offset: int, count: int, tail: Sequence[int] | np.ndarray) -> None:
        """``count`` writes of one register from ``first_seq`` (a run of
        STEPs the fast path coalesced), of which only the last
        ``len(tail)`` values are known: the window and the trace after
        them.  The trace keeps no more than those."""
        _U64.pack_into(self.mem, offset, int(tail[-1]))
        self.seq = first_seq + count - 1
        self._note(first_seq + count - len(tail), offset, tail)

    def replay_writes(self, first_seq: int, offsets: Sequence[int] | np.ndarray, values: Sequence[int] | np.ndarray,
                      last: dict[int, int]) -> None:
        """Writes numbered from ``first_seq`` on, back to back (a batch of
        commands' writes from the ring), and each register's ``last``
        value among them: the window and the trace after them."""
        for offset, value in last.items():
            _U64.pack_into(self.mem, offset, value)
        self.seq = first_seq + len(values) - 1
        self._note(first_seq, offsets, values)

    def _note(self, first_seq: int, offsets: int | Sequence[int] | np.ndarray,
              values: Sequence[int] | np.ndarray) -> None:
        log = self._log
        log.append((first_seq, offsets, values))
        self._logged += len(values)
        self._spelled = None
        while len(log) > 1 and self._logged - len(log[0][2]) >= self.trace_len:
            self._logged -= len(log.popleft()[2])  # scrolled out unseen

    def clear_trace(self) -> None:
        self._log.clear()
        self._logged = 0
        self._spelled = None

    @property
    def trace(self) -> collections.deque[RegWrite]:
        """The last ``trace_len`` writes, oldest first."""
        if self._spelled is None:
            self._spelled = collections.deque(maxlen=self.trace_len)
            skip = max(0, self._logged - self.trace_len)
            for first_seq, offsets, values in self._log:
                start = min(skip, len(values))
                skip -= start
                for i in range(start, len(values)):
                    offset = offsets if isinstance(offsets, int) else int(offsets[i])
                    self._spelled.append(RegWrite(first_seq + i, offset, int(values[i])))
        return self._spelled

    def read64(self, offset: int) -> int:
        value: int = _U64.unpack_from(self.mem, offset)[0]
        return value
