"""kvcpu_dev.device.spec.Driver in-process: the driver's semantics, its BAR0
register writes (exact offsets, values and order) and its sysfs attributes.
Numbers and offsets are the spec's, written out here, not taken from the
code under test."""

from __future__ import annotations

import errno
import logging
import struct
import threading

import pytest
from kvspec import (
    BLOCK_INFO,
    BLOCK_REGS,
    DEFAULTS,
    EVICT,
    FIELDS,
    HOT,
    PREFETCH,
    SHARE,
    STEP,
    STEP_INFO,
    TELEMETRY,
    TELEMETRY_INFO,
    U32_MAX,
    U64_MAX,
    WEIGHT_FIELDS,
    WEIGHT_REGS,
    WEIGHTS,
    WEIGHTS_INFO,
)

from kvcpu_dev.device.spec import Driver

#: Block command -> (counter, register offsets written: addr, len[, step]).
BLOCK = {cmd: (counter, BLOCK_REGS[cmd]) for cmd, counter in
         ((HOT, "hot_count"), (EVICT, "evict_count"), (PREFETCH, "prefetch_count"), (SHARE, "share_count"))}
BLOCK_IDS = ["hot", "evict", "prefetch", "share"]
WRITE_COMMANDS = {STEP: 8, HOT: 24, EVICT: 24, PREFETCH: 24, SHARE: 24, WEIGHTS: 24}


def writes(dev: Driver) -> list[tuple[int, int]]:
    return [(w.offset, w.value) for w in dev.bar0.trace]


def raw_telemetry(dev: Driver) -> dict[str, int]:
    reply = dev.ioctl(TELEMETRY, b"")
    assert len(reply) == 96
    return dict(zip(FIELDS, TELEMETRY_INFO.unpack(reply)))


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as exc:
        fn(*args)
    assert exc.value.errno is not None
    return exc.value.errno


@pytest.fixture
def dev() -> Driver:
    return Driver()


# -- defaults ---------------------------------------------------------------


def test_defaults(dev):
    assert dev.telemetry() == DEFAULTS
    assert raw_telemetry(dev) == DEFAULTS
    assert list(dev.bar0.trace) == []
    assert dev.bar0.mem == bytearray(4096)  # loading writes no register


# -- each command -----------------------------------------------------------


@pytest.mark.parametrize("step", [0, 1, 7, 2**32, U64_MAX])
def test_step_advance(dev, step):
    dev.ioctl(HOT, BLOCK_INFO.pack(0x1000, 64, 99))  # last_target_step becomes 99 ...
    dev.ioctl(STEP, STEP_INFO.pack(step))  # ... and then the step
    assert raw_telemetry(dev) == DEFAULTS | dict(
        current_step=step, step_count=1, hot_count=1, last_va=0x1000, last_len=64,
        last_target_step=step)
    assert writes(dev)[-1] == (0x100, step)
    assert dev.bar0.read64(0x100) == step


@pytest.mark.parametrize("cmd", BLOCK, ids=BLOCK_IDS)
@pytest.mark.parametrize("va, length, target", [
    (0x7F0000001000, 4096, 0),
    (0x7F0000001000, 4096, 12),  # HOT/EVICT/SHARE record the target as given
    (0, 1, 0),
    (U64_MAX, U64_MAX, U64_MAX),
], ids=["plain", "target", "min", "max"])
def test_block_command(dev, cmd, va, length, target):
    counter, regs = BLOCK[cmd]
    assert dev.ioctl(cmd, BLOCK_INFO.pack(va, length, target)) == b""
    assert raw_telemetry(dev) == DEFAULTS | {
        counter: 1, "last_va": va, "last_len": length, "last_target_step": target}
    assert writes(dev) == list(zip(regs, (va, length, target)))
    assert [w.seq for w in dev.bar0.trace] == list(range(1, len(regs) + 1))


@pytest.mark.parametrize("cmd", BLOCK, ids=BLOCK_IDS)
def test_zero_length_is_einval_and_changes_nothing(dev, cmd):
    dev.ioctl(STEP, STEP_INFO.pack(5))
    dev.ioctl(cmd, BLOCK_INFO.pack(0x2000, 16, 3))
    before, trace, mem = dev.telemetry(), list(dev.bar0.trace), bytes(dev.bar0.mem)
    assert errno_of(dev.ioctl, cmd, BLOCK_INFO.pack(0x9000, 0, 8)) == errno.EINVAL
    assert dev.telemetry() == before
    assert list(dev.bar0.trace) == trace
    assert bytes(dev.bar0.mem) == mem


@pytest.mark.parametrize("values", [
    (1, 2, 3, 4, 5, 6),
    (0, 0, 0, 0, 0, 0),
    (U32_MAX,) * 6,  # no validation: stored and reported as given
    (255, 256, 65535, 65536, U32_MAX, 1),
])
def test_set_weights(dev, values):
    dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(*values))
    assert raw_telemetry(dev) == DEFAULTS | dict(zip(WEIGHT_FIELDS, values))
    assert writes(dev) == list(zip(WEIGHT_REGS, values))
    assert [dev.bar0.read64(r) for r in WEIGHT_REGS] == list(values)


def test_telemetry_layout(dev):
    dev.ioctl(STEP, STEP_INFO.pack(0x0101010101010101))
    dev.ioctl(PREFETCH, BLOCK_INFO.pack(0x1122334455667788, 0x99, 0xAABB))
    dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(0x10, 0x20, 0x30, 0x40, 0x50, 0x60))
    reply = dev.ioctl(TELEMETRY, b"")
    assert reply[0:8] == (0x0101010101010101).to_bytes(8, "little")  # current_step
    assert reply[8:16] == (1).to_bytes(8, "little")  # step_count
    assert reply[32:40] == (1).to_bytes(8, "little")  # prefetch_count
    assert reply[48:56] == (0x1122334455667788).to_bytes(8, "little")  # last_va
    assert reply[56:64] == (0x99).to_bytes(8, "little")  # last_len
    assert reply[64:72] == (0xAABB).to_bytes(8, "little")  # last_target_step
    assert reply[72:96] == struct.pack("<6I", 0x10, 0x20, 0x30, 0x40, 0x50, 0x60)


def test_telemetry_writes_no_register(dev):
    dev.ioctl(TELEMETRY, b"")
    assert list(dev.bar0.trace) == []


def test_command_sequence_register_order(dev):
    dev.ioctl(STEP, STEP_INFO.pack(3))
    dev.ioctl(HOT, BLOCK_INFO.pack(0xA000, 0x10, 0))
    dev.ioctl(EVICT, BLOCK_INFO.pack(0xB000, 0x20, 0))
    dev.ioctl(PREFETCH, BLOCK_INFO.pack(0xC000, 0x30, 9))
    dev.ioctl(SHARE, BLOCK_INFO.pack(0xD000, 0x40, 0))
    dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(1, 2, 3, 4, 5, 6))
    assert [(w.seq, w.offset, w.value) for w in dev.bar0.trace] == [
        (1, 0x100, 3),
        (2, 0x200, 0xA000), (3, 0x208, 0x10),
        (4, 0x210, 0xB000), (5, 0x218, 0x20),
        (6, 0x300, 0xC000), (7, 0x308, 0x30), (8, 0x310, 9),
        (9, 0x400, 0xD000), (10, 0x408, 0x40),
        (11, 0x500, 1), (12, 0x508, 2), (13, 0x510, 3), (14, 0x518, 4), (15, 0x520, 5),
        (16, 0x528, 6),
    ]
    assert dev.telemetry() == DEFAULTS | dict(
        current_step=3, step_count=1, hot_count=1, evict_count=1, prefetch_count=1,
        share_count=1, last_va=0xD000, last_len=0x40, last_target_step=0,
        w_r=1, w_f=2, w_s=3, w_d=4, evict_thresh=5, prefetch_thresh=6)


def test_model_sees_every_write_in_order():
    seen = []

    class Model:
        def mmio_write(self, offset, value):
            seen.append((offset, value))

    dev = Driver(model=Model())
    dev.ioctl(PREFETCH, BLOCK_INFO.pack(0xC000, 0x30, 9))
    dev.ioctl(STEP, STEP_INFO.pack(4))
    assert seen == [(0x300, 0xC000), (0x308, 0x30), (0x310, 9), (0x100, 4)] == writes(dev)


def test_trace_is_bounded():
    dev = Driver(trace_len=5)
    for k in range(3):  # 18 register writes
        dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(*[k] * 6))
    assert [(w.seq, w.offset, w.value) for w in dev.bar0.trace] == [
        (14, 0x508, 2), (15, 0x510, 2), (16, 0x518, 2), (17, 0x520, 2), (18, 0x528, 2)]
    assert dev.bar0.seq == 18


# -- errors -----------------------------------------------------------------


@pytest.mark.parametrize("number", [
    0x00004B7F,  # _IO('K', 0x7F)
    0x40084B08,  # _IOW('K', 0x08, 8 bytes)
    0x80084B07,  # _IOR('K', 0x07, 8 bytes): telemetry's nr, wrong size
    0x40184B01,  # _IOW('K', 0x01, 24 bytes): step's nr, wrong size
    0xC0604B07,  # _IOWR('K', 0x07, 96 bytes)
    0x40084C01,  # _IOW('L', 0x01, 8 bytes): other magic
    0x00004B01,  # _IO('K', 0x01)
    0,
], ids=hex)
def test_unknown_command_is_enotty(dev, number):
    assert errno_of(dev.ioctl, number, bytes(WRITE_COMMANDS.get(number, 8))) == errno.ENOTTY
    assert errno_of(dev.ioctl, number, b"") == errno.ENOTTY
    assert dev.telemetry() == DEFAULTS


@pytest.mark.parametrize("cmd, size", WRITE_COMMANDS.items(), ids=hex)
@pytest.mark.parametrize("delta", [-1, +1, "empty"])
def test_wrong_payload_size_is_einval(dev, cmd, size, delta):
    payload = bytes(0 if delta == "empty" else size + delta)
    payload = payload.replace(b"\0", b"\1")  # a non-zero length, were it parsed
    assert errno_of(dev.ioctl, cmd, payload) == errno.EINVAL
    assert dev.telemetry() == DEFAULTS
    assert list(dev.bar0.trace) == []


# -- serialization -----------------------------------------------------------


def test_concurrent_commands_counted_exactly(dev):
    def hammer():
        for i in range(500):
            dev.ioctl(STEP, STEP_INFO.pack(i))
            dev.ioctl(HOT, BLOCK_INFO.pack(i, 1, 0))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t = dev.telemetry()
    assert (t["step_count"], t["hot_count"]) == (2000, 2000)
    assert dev.bar0.seq == 2000 * 3


def test_telemetry_snapshot_is_consistent(dev):
    stop = threading.Event()

    def writer():
        k = 0
        while not stop.is_set():
            k += 1
            dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(*[k] * 6))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snapshots = [raw_telemetry(dev) for _ in range(2000)]
    finally:
        stop.set()
        thread.join()
    for snap in snapshots:
        assert len({snap[f] for f in WEIGHT_FIELDS}) == 1, snap


# -- sysfs attributes ---------------------------------------------------------


def attrs(dev: Driver):
    return {a.name: a for a in dev.attributes()}


def test_attribute_names_and_modes(dev):
    assert [(a.name, a.mode) for a in dev.attributes()] == [
        ("current_step", 0o444), ("w_r", 0o644), ("w_f", 0o644), ("w_s", 0o644), ("w_d", 0o644),
        ("evict_thresh", 0o644), ("prefetch_thresh", 0o644), ("telemetry", 0o444)]
    assert attrs(dev)["current_step"].store is None
    assert attrs(dev)["telemetry"].store is None


def test_attribute_show_defaults(dev):
    shown = {name: a.show() for name, a in attrs(dev).items() if name != "telemetry"}
    assert shown == {"current_step": "0\n", "w_r": "1\n", "w_f": "1\n", "w_s": "2\n",
                     "w_d": "200\n", "evict_thresh": "4096\n", "prefetch_thresh": "57344\n"}


def test_telemetry_attribute_format(dev):
    dev.ioctl(STEP, STEP_INFO.pack(42))
    dev.ioctl(SHARE, BLOCK_INFO.pack(0x7FABCDEF0000, 8192, 0))
    dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(U32_MAX, 2, 3, 4, 5, 6))
    assert attrs(dev)["telemetry"].show() == (
        "current_step=42\nstep_count=1\nhot_count=0\nevict_count=0\nprefetch_count=0\n"
        "share_count=1\nlast_va=0x7fabcdef0000\nlast_len=8192\nlast_target_step=0\n"
        "w_r=4294967295\nw_f=2\nw_s=3\nw_d=4\nevict_thresh=5\nprefetch_thresh=6\n")
    assert attrs(dev)["current_step"].show() == "42\n"


def test_telemetry_attribute_last_va_zero_is_0x0(dev):
    assert "last_va=0x0\n" in attrs(dev)["telemetry"].show()


@pytest.mark.parametrize("field", WEIGHT_FIELDS)
def test_attribute_store_resends_all_weights(dev, field):
    dev.ioctl(WEIGHTS, WEIGHTS_INFO.pack(1, 2, 3, 4, 5, 6))
    dev.bar0.clear_trace()
    attrs(dev)[field].store(b"0x2a\n")
    values = dict(zip(WEIGHT_FIELDS, (1, 2, 3, 4, 5, 6))) | {field: 42}
    assert attrs(dev)[field].show() == "42\n"
    assert dev.telemetry() == DEFAULTS | values
    assert writes(dev) == [(r, values[f]) for r, f in zip(WEIGHT_REGS, WEIGHT_FIELDS)]


@pytest.mark.parametrize("text, code", [
    (b"", errno.EINVAL), (b"abc", errno.EINVAL), (b"-1", errno.EINVAL), (b" 1", errno.EINVAL),
    (b"4294967296", errno.ERANGE),
])
def test_attribute_store_rejects(dev, text, code):
    assert errno_of(attrs(dev)["w_d"].store, text) == code
    assert dev.telemetry() == DEFAULTS
    assert list(dev.bar0.trace) == []


# -- the --trace log ----------------------------------------------------------


def test_trace_log_off_by_default(dev, caplog):
    caplog.set_level(logging.INFO, logger="kvcpu_dev.trace")
    dev.ioctl(STEP, STEP_INFO.pack(1))
    assert caplog.records == []


def test_trace_log_command_then_its_writes(dev, caplog):
    """--trace: each decoded command, followed by the register writes it
    made (the writes are logged indented, under their command)."""
    caplog.set_level(logging.INFO, logger="kvcpu_dev.trace")
    dev.tracing = True
    dev.ioctl(STEP, STEP_INFO.pack(1))
    dev.ioctl(PREFETCH, BLOCK_INFO.pack(0x1000, 0xA, 0x7))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "STEP_ADVANCE(step=0x1)",
        "  #1 STEP_ADVANCE@0x0100 <- 0x1",
        "PREFETCH(va=0x1000, len=0xa, target_step=0x7)",
        "  #2 PREFETCH_ADDR@0x0300 <- 0x1000",
        "  #3 PREFETCH_LEN@0x0308 <- 0xa",
        "  #4 PREFETCH_STEP@0x0310 <- 0x7",
    ]
