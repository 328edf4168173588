"""The spec, written out: the driver's ioctl numbers, payload and telemetry
layouts, register offsets and load-time weights as its header and its
documentation state them.  Deliberately not imported from the package under
test: the tests check the package against these.  One copy, for every test
(the unit tests, the live suite and the container tests)."""

from __future__ import annotations

import struct

STEP, HOT, EVICT, PREFETCH, SHARE, WEIGHTS, TELEMETRY = (
    0x40084B01, 0x40184B02, 0x40184B03, 0x40184B04, 0x40184B05, 0x40184B06, 0x80604B07)

STEP_INFO, BLOCK_INFO, WEIGHTS_INFO = struct.Struct("<Q"), struct.Struct("<3Q"), struct.Struct("<6I")
TELEMETRY_INFO = struct.Struct("<9Q6I")

COUNTERS = ("step_count", "hot_count", "evict_count", "prefetch_count", "share_count")
WEIGHT_FIELDS = ("w_r", "w_f", "w_s", "w_d", "evict_thresh", "prefetch_thresh")
#: GET_TELEMETRY's fields, in order.
FIELDS = ("current_step", *COUNTERS, "last_va", "last_len", "last_target_step", *WEIGHT_FIELDS)
#: Telemetry at load: zero counters, the driver's default weights.
DEFAULTS = dict.fromkeys(FIELDS[:9], 0) | dict(
    w_r=1, w_f=1, w_s=2, w_d=200, evict_thresh=4096, prefetch_thresh=57344)
U64_MAX, U32_MAX = 2**64 - 1, 2**32 - 1

#: BAR0 offsets: STEP's register, each block command's (addr, len[, step])
#: registers, and SET_WEIGHTS' six in the driver's order.
STEP_REG = 0x100
BLOCK_REGS = {
    HOT: (0x200, 0x208),
    EVICT: (0x210, 0x218),
    PREFETCH: (0x300, 0x308, 0x310),
    SHARE: (0x400, 0x408),
}
WEIGHT_REGS = (0x500, 0x508, 0x510, 0x518, 0x520, 0x528)
