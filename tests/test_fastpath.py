"""The C fast path against the executable specification, core.Driver.

Random command sequences (every command number the driver knows, some it
does not, payloads of the right and wrong sizes, sysfs weight stores) run
through both in-process, no FUSE; replies, errnos, telemetry, the register
write sequence and BAR0's bytes must agree exactly.  Then the ring itself:
what it carries per command, and what overflow does.
"""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcpu_dev import abi, regs
from kvcpu_dev.core import Driver
from kvcpu_dev.fastpath import EV_IOCTL, EV_STORE, Event, NativeDriver

U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
# Lengths near the edges matter (0 is EINVAL), so draw them often.
LENGTH = st.one_of(st.just(0), st.just(1), st.just(2**64 - 1), U64)

KNOWN = sorted(abi.BY_NUMBER)
UNKNOWN = st.integers(0, 2**32 - 1).filter(lambda n: n not in abi.BY_NUMBER)


@st.composite
def ioctl_op(draw: st.DrawFn) -> tuple:
    cmd = draw(st.one_of(st.sampled_from(KNOWN), UNKNOWN))
    command = abi.BY_NUMBER.get(cmd)
    if command is None:
        payload = draw(st.binary(max_size=32))
    elif draw(st.integers(0, 9)) == 0:  # the wrong size: only in-process
        payload = draw(st.binary(max_size=40))
    elif cmd == abi.KV_CPU_STEP_ADVANCE:
        payload = struct.pack("<Q", draw(U64))
    elif cmd == abi.KV_CPU_SET_WEIGHTS:
        payload = struct.pack("<6I", *draw(st.lists(U32, min_size=6, max_size=6)))
    elif cmd == abi.KV_CPU_GET_TELEMETRY:
        payload = b""
    else:
        payload = struct.pack("<3Q", draw(U64), draw(LENGTH), draw(U64))
    return ("ioctl", cmd, payload)


store_op = st.tuples(st.just("store"), st.sampled_from(abi.WEIGHT_FIELDS), U32)
ops = st.lists(st.one_of(ioctl_op(), ioctl_op(), store_op), max_size=60)


def run(dev: Driver | NativeDriver, op: tuple) -> tuple[int, bytes]:
    try:
        if op[0] == "store":
            dev.store_weight(op[1], op[2])
            return 0, b""
        return 0, dev.ioctl(op[1], op[2])
    except OSError as exc:
        return exc.errno, b""


def writes(dev: Driver | NativeDriver) -> list[tuple[int, int, int]]:
    return [(w.seq, w.offset, w.value) for w in dev.bar0.trace]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_same_as_the_specification(sequence: list[tuple]) -> None:
    spec, native = Driver(), NativeDriver()
    try:
        for op in sequence:
            assert run(native, op) == run(spec, op), op
            assert native.telemetry() == spec.telemetry(), op
        native.drain()
        assert writes(native) == writes(spec)
        assert native.bar0_bytes() == bytes(spec.bar0.mem) == bytes(native.bar0.mem)
    finally:
        native.close()


def test_defaults_are_the_drivers() -> None:
    native = NativeDriver()
    assert native.telemetry() == Driver().telemetry()
    assert native.telemetry()["w_d"] == 200 == regs.DEFAULT_WEIGHTS["w_d"]
    native.close()


def test_each_event_carries_time_pid_payload_result_and_writes() -> None:
    native = NativeDriver()
    seen: list[Event] = []
    native.listeners.append(seen.append)
    native.ioctl(abi.KV_CPU_PREFETCH, struct.pack("<3Q", 0x1000, 0x2000, 9), pid=4242)
    with pytest.raises(OSError):
        native.ioctl(abi.KV_CPU_EVICT, struct.pack("<3Q", 1, 0, 0), pid=7)
    reply = native.ioctl(abi.KV_CPU_GET_TELEMETRY, pid=8)
    native.store_weight("w_s", 5)
    native.drain()
    prefetch, evict, telemetry, store = seen
    assert [e.seq for e in seen] == [1, 2, 3, 4]
    assert prefetch.t_ns <= evict.t_ns <= telemetry.t_ns <= store.t_ns
    assert (prefetch.kind, prefetch.cmd, prefetch.pid, prefetch.errno) == (EV_IOCTL, abi.KV_CPU_PREFETCH, 4242, 0)
    assert prefetch.data == struct.pack("<3Q", 0x1000, 0x2000, 9)
    assert [(w.offset, w.value) for w in prefetch.writes] == [
        (regs.PREFETCH_ADDR, 0x1000), (regs.PREFETCH_LEN, 0x2000), (regs.PREFETCH_STEP, 9)]
    assert [w.seq for w in prefetch.writes] == [1, 2, 3]
    assert (evict.errno, evict.writes) == (errno.EINVAL, ())
    assert telemetry.data == reply and telemetry.writes == ()
    assert (store.kind, store.cmd, store.data) == (EV_STORE, 2, struct.pack("<I", 5))
    assert [w.seq for w in store.writes] == list(range(4, 10))
    native.close()


class Listener:
    """A stand-in for the model: what the ring tells it."""

    def __init__(self) -> None:
        self.lost = 0
        self.writes: list[tuple[int, int]] = []

    def mmio_write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))

    def events_lost(self, count: int) -> None:
        self.lost += count


def test_overflow_drops_newest_counts_them_and_desyncs_the_model() -> None:
    model = Listener()
    native = NativeDriver(model, ring_events=4)
    for step in range(10):  # the fast path never waits for the consumer
        native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
    assert native.telemetry()["step_count"] == 10  # the driver state is exact
    assert native.ring_stats()["ring_dropped"] == 6
    assert native.drain() == 4
    assert model.writes == [(regs.STEP_ADVANCE, s) for s in range(4)]
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 99))
    native.drain()  # the gap shows at the next kept event
    assert model.lost == native.lost == 6
    assert model.writes[-1] == (regs.STEP_ADVANCE, 99)
    native.close()


def test_arm_reports_waiting_events_and_the_eventfd_fires_once() -> None:
    import os

    native = NativeDriver()
    assert native.arm() is False
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 1))
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 2))
    assert os.eventfd_read(native.wake_fd) == 1  # one wake-up for the burst
    assert native.arm() is True
    native.drain()
    assert native.arm() is False
    native.close()


def whole_space_hint_then_step() -> tuple[NativeDriver, DeviceModel]:  # noqa: F821
    """An incremental model behind the C state, a MARK_HOT over the whole
    address space (every entry of 4096) and a STEP after it, not drained."""
    from kvcpu_dev.model import DeviceModel, ModelConfig

    model = DeviceModel(ModelConfig(entries=4096, clock="sim"))
    model.incremental = True
    native = NativeDriver(model)
    native.ioctl(abi.KV_CPU_MARK_HOT, struct.pack("<3Q", 0, 2**64 - 1, 0))
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 5))
    return native, model


def test_a_huge_hint_is_applied_in_slices_and_in_order() -> None:
    native, model = whole_space_hint_then_step()
    sliced = 0
    while True:
        native.drain()
        if not model.busy():
            break
        assert model.step32 == 0  # the STEP waits behind the hint
        model.work(0.0)  # the smallest slice
        sliced += 1
    assert sliced > 1
    assert model.step32 == 5 and model.stats()["live_entries"] == 4096
    native.close()


def test_a_model_view_read_finishes_the_work_first() -> None:
    native, model = whole_space_hint_then_step()
    native.drain(finish=True)
    assert not model.busy() and model.step32 == 5
    native.close()


def test_attribute_snapshots_share_one_budget() -> None:
    from kvcpu_dev.fs import Snapshots

    s = Snapshots(budget=100)
    for fh in range(1, 11):
        s.put(fh, b"x" * 30)
    assert s.total <= 100  # the oldest were dropped
    assert s.get(10) == b"x" * 30 and s.get(1) is None
    s.put(11, b"y" * 500)  # one larger than the budget still renders
    assert s.get(11) == b"y" * 500 and s.total == 500
    s.drop(11)
    assert s.total == 0
