"""The C fast path against the executable specification, device/spec.py's
Driver.

Random command sequences (every command number the driver knows, some it
does not, payloads of the right and wrong sizes, sysfs weight stores) run
through both in-process, no FUSE; replies, errnos, telemetry, the register
write sequence and BAR0's bytes must agree exactly.  Then the ring itself:
what it carries per command, and what overflow does.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import threading
import unittest.mock
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcpu_dev.device import abi, regs
from kvcpu_dev.device.spec import Driver
from kvcpu_dev.device.sysfs import Attribute, Pieces
from kvcpu_dev.device.tables import EventKind, FaultMode
from kvcpu_dev.driver.events import Event
from kvcpu_dev.driver.handle import FaultRule, NativeDriver
from kvcpu_dev.driver.priority import PythonPriority
from kvcpu_dev.driver.sinks import NoModel
from kvcpu_dev.model import DeviceModel, ModelConfig
from kvcpu_dev.native._fuse import lib

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
        assert exc.errno is not None
        return exc.errno, b""


def writes(dev: Driver | NativeDriver) -> list[tuple[int, int, int]]:
    return [(w.seq, w.offset, w.value) for w in dev.bar0.trace]


class Events:
    """A listener keeping every command whole, as a recorder does."""

    whole_commands = True
    backlog = 0
    run_bounds_ns: tuple[int, ...] = ()

    def __init__(self, on_command=None) -> None:
        self.seen: list[Event] = []
        self._on_command = on_command

    def take(self, batch) -> None:
        for ev in batch.events():
            self.seen.append(ev)
            if self._on_command is not None:
                self._on_command(ev)

    def step_run(self, count: int, service_ns: int, per_bucket) -> None:
        raise AssertionError("no run while a listener takes whole commands")


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
    events = Events()
    native.add_listener(events)
    seen = events.seen
    native.ioctl(abi.KV_CPU_PREFETCH, struct.pack("<3Q", 0x1000, 0x2000, 9), pid=4242)
    with pytest.raises(OSError):
        native.ioctl(abi.KV_CPU_EVICT, struct.pack("<3Q", 1, 0, 0), pid=7)
    reply = native.ioctl(abi.KV_CPU_GET_TELEMETRY, pid=8)
    native.store_weight("w_s", 5)
    native.drain()
    prefetch, evict, telemetry, store = seen
    assert [e.seq for e in seen] == [1, 2, 3, 4]
    assert prefetch.t_ns <= evict.t_ns <= telemetry.t_ns <= store.t_ns
    assert (prefetch.kind, prefetch.cmd, prefetch.pid, prefetch.errno) == (EventKind.IOCTL, abi.KV_CPU_PREFETCH, 4242, 0)
    assert prefetch.data == struct.pack("<3Q", 0x1000, 0x2000, 9)
    assert [(w.offset, w.value) for w in prefetch.writes] == [
        (regs.PREFETCH_ADDR, 0x1000), (regs.PREFETCH_LEN, 0x2000), (regs.PREFETCH_STEP, 9)]
    assert [w.seq for w in prefetch.writes] == [1, 2, 3]
    assert (evict.errno, evict.writes) == (errno.EINVAL, ())
    assert telemetry.data == reply and telemetry.writes == ()
    assert (store.kind, store.cmd, store.data) == (EventKind.STORE, 2, struct.pack("<I", 5))
    assert [w.seq for w in store.writes] == list(range(4, 10))
    native.close()


class ModelDouble(NoModel):
    """A stand-in for the model: what the ring tells it."""

    def __init__(self) -> None:
        self.lost = 0
        self.writes: list[tuple[int, int]] = []

    def mmio_write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))

    def events_lost(self, count: int) -> None:
        self.lost += count


def test_overflow_drops_newest_counts_them_and_desyncs_the_model() -> None:
    model = ModelDouble()
    native = NativeDriver(model, ring_events=4, lossless=False)
    for step in range(10):  # a lossy fast path never waits for the consumer
        native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
    assert native.telemetry()["step_count"] == 10  # the driver state is exact
    assert native.ring_stats()["ring_dropped"] == 6
    assert native.drain() == 4
    assert model.writes == [(regs.STEP_ADVANCE, s) for s in range(4)]
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 99))
    native.drain()  # the gap shows at the next kept event
    assert model.lost == native.reader.lost == 6
    assert model.writes[-1] == (regs.STEP_ADVANCE, 99)
    native.close()


def test_arm_reports_waiting_events_and_the_eventfd_fires_once() -> None:
    import os

    native = NativeDriver()
    assert native.reader.arm() is False
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 1))
    native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 2))
    assert os.eventfd_read(native.wake_fd) == 1  # one wake-up for the burst
    assert native.reader.arm() is True
    native.drain()
    assert native.reader.arm() is False
    native.close()


def whole_space_hint_then_step() -> tuple[NativeDriver, DeviceModel]:
    """An incremental model behind the C state, a MARK_HOT over the whole
    address space (every entry of 4096) and a STEP after it, not drained."""
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


def _text(body: str) -> Attribute:
    return Attribute("t", lambda: body)


def test_attribute_snapshots_share_one_budget() -> None:
    from kvcpu_dev.transport.attrfs import Rendering, Snapshots

    s = Snapshots(budget=100)
    for fh in range(1, 11):
        s.put(fh, Rendering(_text("x" * 30)))
    assert s.total <= 100  # the oldest were dropped
    assert s.read(10, 100, 0) == b"x" * 30 and s.get(1) is None
    s.put(11, Rendering(_text("y" * 500)))  # one larger than the budget still renders
    assert s.read(11, 1000, 0) == b"y" * 500 and s.total == 500
    s.drop(11)
    assert s.total == 0


def test_the_blocks_file_in_pieces_is_its_whole_text() -> None:
    model = DeviceModel(ModelConfig(entries=20_000, clock="sim"))
    rng = np.random.default_rng(7)
    for va in rng.integers(0, 1 << 20, 9_000):
        model.mmio_write(regs.BOOST_ADDR, int(va) << 21)
        model.mmio_write(regs.BOOST_LEN, 2 << 20)
    model.run_pending()
    blocks = {a.name: a for a in model.attributes()}["blocks"]
    assert blocks.pieces is not None
    held, text = blocks.pieces()
    pieces = list(text)
    assert len(pieces) > 2 and held > 0  # the header, then rows a chunk at a time
    assert b"".join(pieces).decode() == blocks.show() and blocks.show().count("\n") > 8_000


def test_a_large_view_is_formatted_as_far_as_its_reads_reach() -> None:
    """blocks in pieces: a read makes only the pieces it returns; the
    snapshot behind them counts against the budget until the last piece,
    and the text read is show()'s."""
    from kvcpu_dev.transport.attrfs import Rendering, Snapshots

    made: list[int] = []

    def pieces() -> Pieces:
        def text():
            for i in range(10):
                made.append(i)
                yield str(i).encode() * 100
        return Pieces(5000, text())

    whole = "".join(str(i) * 100 for i in range(10))
    attr = Attribute("p", lambda: whole, pieces=pieces)
    s = Snapshots(budget=1 << 20)
    s.put(1, Rendering(attr))
    assert s.total == 5000 and made == []
    assert s.read(1, 150, 0) == whole[:150].encode() and made == [0, 1]
    assert s.total == 5000 + 200
    got = b"".join(s.read(1, 128, off) for off in range(150, 1100, 128))
    assert whole[:150].encode() + got == whole.encode()
    assert s.total == 1000  # the snapshot is let go with the last piece
    small = Snapshots(budget=6000)  # a snapshot counts: a second one pushes the first out
    small.put(1, Rendering(attr))
    small.put(2, Rendering(attr))
    assert small.get(1) is None and small.total == 5000


def test_pieces_behind_an_empty_snapshot_are_still_made() -> None:
    """An empty directory's snapshot holds 0 bytes; its pieces (the
    header) are read all the same."""
    from kvcpu_dev.transport.attrfs import Rendering, Snapshots

    attr = Attribute("p", lambda: "# header\n", pieces=lambda: Pieces(0, iter([b"# header\n"])))
    s = Snapshots()
    s.put(1, Rendering(attr))
    assert s.read(1, 4096, 0) == b"# header\n" and s.total == len("# header\n")


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.binary(max_size=40), max_size=12),
       reads=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 200)), min_size=1, max_size=20),
       slice_=st.sampled_from([1, 7, 64, 1 << 20]))
def test_any_read_of_a_view_in_pieces_is_its_texts_bytes(pieces, reads, slice_) -> None:
    """Reads at any offset, forwards or back, within a piece or across
    several (empty ones too), past the end: the bytes of the whole text
    (the pieces are kept apart and joined per read)."""
    from kvcpu_dev.transport import attrfs

    whole = b"".join(pieces)
    attr = Attribute("p", lambda: whole.decode("latin-1"), pieces=lambda: Pieces(10, iter(pieces)))
    s = attrfs.Snapshots()
    s.put(1, attrfs.Rendering(attr))
    with unittest.mock.patch.object(attrfs, "READ_SLICE", slice_):
        for off, size in reads:
            assert s.read(1, size, off) == whole[off : off + min(size, slice_)]
            rendering = s.get(1)
            assert rendering is not None and s.total == rendering.size  # the budget counts what it holds


def test_a_view_whose_pieces_fail_fails_every_read_after() -> None:
    """Not a text cut where the pieces stopped, served as if whole; and
    the budget still counts what was made."""
    from kvcpu_dev.transport import attrfs

    def pieces() -> Iterator[bytes]:
        yield b"x" * 100
        raise IndexError("a tier no name fits")

    attr = Attribute("p", lambda: "", pieces=lambda: Pieces(10, pieces()))
    s = attrfs.Snapshots()
    s.put(1, attrfs.Rendering(attr))
    assert s.read(1, 50, 0) == b"x" * 50
    with pytest.raises(IndexError):
        s.read(1, 100, 50)
    for off in (0, 50, 100):
        with pytest.raises(OSError) as failed:
            s.read(1, 100, off)
        assert failed.value.errno == errno.EIO
    assert s.total == 110


def test_the_attribute_mount_says_which_requests_are_followed_at_once() -> None:
    """A large view's lookup and open are followed by the caller's next
    request, and so is its read that fills its request with more text
    behind it; its last read, a getattr, and a small file's requests are
    not (nothing to gain, and any user may open one).  Each is said once
    (Session.serve asks after every request)."""
    from kvcpu_dev.transport.attrfs import NodeFS

    big = "x" * 3000
    fs = NodeFS([Attribute("small", lambda: "1\n"),
                 Attribute("big", lambda: big, pieces=lambda: Pieces(0, iter([big[:1000].encode(),
                                                                             big[1000:].encode()])))],
                device_file=False)
    small_ino = fs.lookup(1, b"small").ino
    assert not fs.continues()
    big_ino = fs.lookup(1, b"big").ino
    assert fs.continues() and not fs.continues()
    fh = fs.open(small_ino, os.O_RDONLY)
    assert not fs.continues()
    fs.read(small_ino, 4096, 0, fh)
    assert not fs.continues()
    fh = fs.open(big_ino, os.O_RDONLY)
    assert fs.continues()
    followed = []
    for off in range(0, 3000, 1024):
        fs.read(big_ino, 1024, off, fh)
        followed.append(fs.continues())
    assert followed == [True, True, False]  # 1024, 2048, then the last 952 bytes
    fs.read(big_ino, 1000, 2000, fh)  # exactly to the end: nothing behind it
    assert not fs.continues()
    fs.getattr(big_ino)
    assert not fs.continues()


# -- runs of STEPs: the fast path coalesces them, the reader hands them on as one call --


BLOCK = 4096
STEP_VALUE = st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1), U64)
model_ops = st.lists(st.one_of(
    st.tuples(st.just("step"), STEP_VALUE),
    st.tuples(st.just("step"), STEP_VALUE),
    st.tuples(st.just("step"), STEP_VALUE),
    st.tuples(st.just("prefetch"), st.integers(0, 40), st.integers(1, 6), st.integers(0, 40)),
    st.tuples(st.just("hot"), st.integers(0, 40), st.integers(1, 6)),
    st.tuples(st.just("drain"), st.integers(1, 5)),
    st.tuples(st.just("scan")),
    st.tuples(st.just("store"), st.sampled_from(abi.WEIGHT_FIELDS), st.integers(0, 500)),
), max_size=80)


def untimed(stats: dict) -> dict:
    """Without the scan's own duration (wall time, differs run to run)."""
    return {k: v for k, v in stats.items() if "scan_ns" not in k}


def model_state(model) -> dict:
    return {"counts": untimed(model.counts), "step32": model.step32, "sim_ns": model._sim_ns,
            "pending": model._pending, "due": list(model._due), "last_scan": untimed(model.last_scan)}


@pytest.mark.parametrize("coalesce", [False, True], ids=["events", "coalesced"])
@settings(max_examples=300, deadline=None)
@given(sequence=model_ops, trace_len=st.integers(1, 12))
def test_step_runs_reach_the_model_as_single_writes_would(sequence: list[tuple], trace_len: int,
                                                          coalesce: bool) -> None:
    """spec.Driver hands the model one write at a time; the ring reader
    hands it each command's writes, or runs of plain STEPs the fast path
    coalesced after a drain granted it (KV_EV_STEPS, Bar0.replay_run,
    DeviceModel.mmio_write_steps).  Prefetch deadlines
    met inside a run, steps past 32 bits, weights changed between runs,
    partial drains and scans between them: the model's state and the
    register trace must come out the same."""
    def model() -> DeviceModel:
        return DeviceModel(ModelConfig(entries=16, block_size=BLOCK, clock="sim"))

    spec = Driver(model=model(), trace_len=trace_len)
    native_model = model()
    native = NativeDriver(native_model, trace_len=trace_len, coalesce=coalesce)
    try:
        for op in sequence:
            if op[0] == "step":
                cmds = [("ioctl", abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", op[1]))]
            elif op[0] == "prefetch":
                cmds = [("ioctl", abi.KV_CPU_PREFETCH, struct.pack("<3Q", op[1] * BLOCK, op[2] * BLOCK, op[3]))]
            elif op[0] == "hot":
                cmds = [("ioctl", abi.KV_CPU_MARK_HOT, struct.pack("<3Q", op[1] * BLOCK, op[2] * BLOCK, 0))]
            elif op[0] == "store":
                cmds = [op]
            elif op[0] == "drain":
                native.drain(op[1])
                continue
            else:  # the daemon's scan between batches
                native.drain()
                spec.model.run_pending()  # type: ignore[union-attr]
                native_model.run_pending()
                continue
            for cmd in cmds:
                assert run(native, cmd) == run(spec, cmd)
        native.drain()
        assert model_state(native_model) == model_state(spec.model)
        assert writes(native) == writes(spec)
        assert untimed(native_model.stats()) == untimed(spec.model.stats())  # type: ignore[union-attr]
    finally:
        native.close()


def test_a_run_of_steps_is_one_model_call() -> None:
    """The point of the runs: a decode loop's STEPs cost the model one call
    per run, not one per command."""
    calls = []

    class Counting(ModelDouble):
        def mmio_write_steps(self, offset: int, count: int, last: int, top: int, t_ns=None) -> bool:
            calls.append((offset, count, last, top))
            return True

    model = Counting()
    native = coalescing_driver(model)
    for step in range(500):
        native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
    native.drain()
    assert calls == [(regs.STEP_ADVANCE, 500, 499, 499)] and model.writes == []
    native.close()


# -- coalesced runs: the fast path writes one event for a run of STEPs ------------


def step(dev: Driver | NativeDriver, value: int) -> None:
    dev.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", value))


def coalescing_driver(model=None, **kw) -> NativeDriver:
    native = NativeDriver(model, coalesce=True, **kw)
    native.drain()  # the grant comes at the end of a drain
    assert native.reader.coalescing()
    return native


def test_coalesced_steps_write_no_event_and_arrive_as_one_run() -> None:
    from kvcpu_dev.bench.stats import CommandStats

    spec = Driver(model=DeviceModel(ModelConfig(entries=16, block_size=BLOCK, clock="sim")))
    native = coalescing_driver(DeviceModel(ModelConfig(entries=16, block_size=BLOCK, clock="sim")))
    stats = CommandStats()
    native.add_listener(stats)
    values = [(i * 7919) % 100_003 for i in range(lib.KV_STEPS_TAIL + 500)]  # more than the tail keeps
    for v in values:
        step(spec, v)
        step(native, v)
    ring = native.ring_stats()
    # At most one run published by age (KV_RUN_NS) while the other grows.
    assert ring["ring_depth"] <= 1 and ring["steps_coalesced"] == len(values)
    assert native.telemetry() == spec.telemetry()  # the driver's state is never coalesced
    assert native.drain() <= 2  # events, for thousands of commands
    assert writes(native) == writes(spec)
    assert bytes(native.bar0.mem) == bytes(spec.bar0.mem) == native.bar0_bytes()
    assert model_state(native.reader.model) == model_state(spec.model)
    assert stats.commands == {("STEP", "none"): len(values)} and sum(stats.hist["STEP"]) == len(values)
    native.close()


def test_anything_but_a_plain_step_ends_the_run_and_the_grant() -> None:
    """The run is published before the command that ends it; STEPs after
    it are events again until a drain has seen it and grants anew."""
    spec, native = Driver(), coalescing_driver()
    for dev in (spec, native):
        for v in range(3):
            step(dev, v)
        dev.ioctl(abi.KV_CPU_MARK_HOT, struct.pack("<3Q", 0, BLOCK, 0))
        step(dev, 10)
        step(dev, 2**32)  # past 32 bits: the model truncates it, so never coalesced
    assert not native.reader.coalescing()
    assert native.ring_stats()["ring_depth"] == 4  # the run, HOT, two STEPs
    native.drain()
    assert writes(native) == writes(spec)
    assert native.reader.coalescing()
    native.ioctl(abi.KV_CPU_GET_TELEMETRY)  # even a read: the grant is for STEPs only
    assert not native.reader.coalescing()
    native.close()


def test_a_bounded_drain_leaves_a_young_run_to_the_fast_path() -> None:
    """The daemon's periodic drain takes no lock: the fast path publishes
    a run once it is KV_RUN_NS old.  A full drain (an attribute read)
    seals it, so a read after an ioctl sees that ioctl."""
    native = coalescing_driver()
    step(native, 1)
    assert native.drain(100) == 0
    assert native.drain() == 1
    native.close()


def test_a_floods_run_slows_the_look_and_a_decode_loops_does_not() -> None:
    native = coalescing_driver()
    for v in range(lib.KV_RUN_FLOOD):
        step(native, v)
    native.drain()
    assert native.reader.flooded()
    step(native, 1)
    native.drain()
    assert not native.reader.flooded()
    native.close()


def test_a_run_waits_for_a_free_slot_while_two_are_unread() -> None:
    """Python seals runs as it drains and the fast path goes on coalescing
    into a second slot; with both runs unread, a STEP is an event again."""
    spec, native = Driver(), coalescing_driver()
    for batch in range(3):
        for v in range(5):
            step(spec, batch * 10 + v)
            step(native, batch * 10 + v)
        lib.kv_ring_seal(native.handle, 0)  # what a drain does first
    assert native.reader.coalescing()
    # Two runs, then events (more runs and fewer events only if an age
    # publish, KV_RUN_NS, came between two of these calls).
    assert native.ring_stats()["ring_depth"] >= 2 + 5
    assert native.ring_stats()["steps_coalesced"] <= 10
    native.drain()
    assert writes(native) == writes(spec)
    for v in range(3):
        step(native, v)  # the slots are free again
    assert native.ring_stats()["ring_depth"] == 0
    native.close()


def native_model_judged(model: DeviceModel) -> int:
    model.run_pending()
    return model.counts["prefetch_on_time"] + model.counts["prefetch_late"]


def test_no_grant_while_something_needs_each_step() -> None:
    def refused(native: NativeDriver) -> bool:
        native.drain()
        return not native.reader.coalescing()

    model = DeviceModel(ModelConfig(entries=16, block_size=BLOCK, clock="sim"))
    native = coalescing_driver(model)
    native.ioctl(abi.KV_CPU_PREFETCH, struct.pack("<3Q", 0, BLOCK, 5))
    assert not refused(native)  # a prefetch deadline: STEPs before it are still arithmetic...
    for v in range(5):
        step(native, v)
    assert native.ring_stats()["ring_depth"] == 0 and native.reader.coalescing()
    step(native, 5)  # ... and STEP 5 must be seen as such: the run, then the STEP, no grant
    assert native.ring_stats()["ring_depth"] == 2 and not native.reader.coalescing()
    assert not refused(native)  # met: the model is plain arithmetic again
    assert native_model_judged(model) == 1
    native.tracing = True
    assert refused(native)  # --trace logs every command
    native.tracing = False
    native.add_listener(Events())  # a recorder wants every command whole
    assert refused(native)
    native.reader.listeners.clear()
    assert not refused(native)
    native.add_fault(FaultRule(cmd=0, errno=0, mode=FaultMode.COUNT, n=1))
    native.drain()
    step(native, 1)  # a rule sees every command: the STEP is an event
    assert native.ring_stats()["ring_depth"] == 1
    native.close()


def test_the_grant_waits_for_the_consumer_to_see_every_other_command() -> None:
    """Python decides on what it has seen; a hint it has not drained yet
    could arm what the run would skip."""
    native = NativeDriver(coalesce=True)
    bounds = [100, 1000]
    native.ioctl(abi.KV_CPU_PREFETCH, struct.pack("<3Q", 0, BLOCK, 5))  # seq 1
    step(native, 1)  # seq 2, a plain STEP
    assert lib.kv_ring_coalesce(native.handle, 0, bounds, 2, 2**32) == 0
    assert lib.kv_ring_coalesce(native.handle, 1, bounds, 2, 2**32) == 1  # only plain STEPs after seq 1
    native.close()


def test_a_run_the_full_ring_drops_is_lost_as_its_commands() -> None:
    model = ModelDouble()
    native = NativeDriver(model, ring_events=4, coalesce=True, lossless=False)
    for v in range(4):
        step(native, v)  # plain STEP events fill the ring
    assert lib.kv_ring_coalesce(native.handle, 0, [], 0, 2**32) == 1  # nothing but plain STEPs since
    for v in range(10):
        step(native, 100 + v)
    lib.kv_ring_seal(native.handle, 0)  # no room: the run is dropped
    assert native.ring_stats()["ring_dropped"] == 10
    assert native.drain() == 4
    native.ioctl(abi.KV_CPU_MARK_HOT, struct.pack("<3Q", 0, BLOCK, 0))
    native.drain()  # the gap shows at the next kept event
    assert model.lost == native.reader.lost == 10
    assert native.telemetry()["step_count"] == 14
    native.close()


def test_arming_the_eventfd_seals_the_run_and_ends_the_grant() -> None:
    """A consumer about to sleep must not leave commands in a run that
    wakes nobody, nor grant one while it sleeps (an attribute read drains
    from the same thread)."""
    native = coalescing_driver()
    step(native, 1)
    assert native.reader.arm() is True  # the sealed run is waiting
    assert not native.reader.coalescing()
    native.drain()
    assert native.reader.arm() is False  # asleep from here
    native.drain()  # an attribute read
    assert not native.reader.coalescing()
    step(native, 2)
    assert os.eventfd_read(native.wake_fd) == 1  # the STEP is an event, and wakes it
    native.close()


def test_a_watched_flood_wakes_python_when_the_grant_ends() -> None:
    """During a flood Python sleeps 100 ms; the command that ends the grant
    (STEPs fill the ring one event each after it) must wake it."""
    native = coalescing_driver()
    native.reader.watch(True)
    step(native, 1)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(native.wake_fd)  # a coalesced STEP wakes nobody
    native.ioctl(abi.KV_CPU_MARK_HOT, struct.pack("<3Q", 0, BLOCK, 0))
    assert os.eventfd_read(native.wake_fd) == 1
    native.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 11 * 10**9), max_size=40))
def test_a_run_buckets_service_times_as_the_bench_does(times: list[int]) -> None:
    import bisect

    from kvcpu_dev.bench.stats import CommandStats

    native = coalescing_driver()
    native.add_listener(CommandStats())
    bounds = CommandStats.run_bounds_ns
    try:
        for ns in [*times, *bounds, *(b + 1 for b in bounds), *(b - 1 for b in bounds)]:
            assert lib.kv_steps_bucket(native.handle, ns) == bisect.bisect_left(bounds, ns)
    finally:
        native.close()


class WholeCommands:
    """A listener's commands, each whole: the fast path coalesces nothing
    while it listens."""

    whole_commands = True
    backlog = 0
    run_bounds_ns: tuple[int, ...] = ()

    def __init__(self, inner) -> None:
        self.inner = inner

    def take(self, batch) -> None:
        for ev in batch.events():
            self.inner.command(ev)

    def step_run(self, count: int, service_ns: int, per_bucket) -> None:
        raise AssertionError("no run while a listener takes whole commands")


def counted(sequence: list[tuple], coalesce: bool) -> dict:
    """The bench's command counters after ``sequence`` (with drains in
    between), one event at a time or through coalesced runs."""
    from kvcpu_dev.bench.stats import CommandStats

    stats = CommandStats()
    native = NativeDriver(coalesce=coalesce)
    native.add_listener(stats if coalesce else WholeCommands(stats))
    try:
        for op in sequence:
            if op[0] == "drain":
                native.drain()
            else:
                run(native, op)
        native.drain()
    finally:
        native.close()
    return {"commands": stats.commands, "hist": {k: sum(v) for k, v in stats.hist.items()},
            "faults": stats.faults, "stores": stats.stores, "controls": stats.controls}


plain_step_op = st.tuples(st.just("ioctl"), st.just(abi.KV_CPU_STEP_ADVANCE),
                          st.integers(0, 2**32 - 1).map(lambda v: struct.pack("<Q", v)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(ioctl_op(), store_op, plain_step_op, plain_step_op, plain_step_op,
                          st.tuples(st.just("drain"))), max_size=60))
def test_metrics_count_coalesced_runs_as_single_events(sequence: list[tuple]) -> None:
    """CommandStats.step_run (a run the fast path coalesced, its histogram
    bucketed in C) against CommandStats.command (one event at a time)."""
    assert counted(sequence, coalesce=True) == counted(sequence, coalesce=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 11 * 10**9), min_size=1, max_size=50))
def test_metrics_histogram_of_a_run_is_the_events_histogram(times: list[int]) -> None:
    """The same STEPs counted as one run (bucketed as the fast path does,
    tied to bisect above) and as single events: every bucket equal."""
    import bisect

    from kvcpu_dev.bench.stats import CommandStats

    by_run, by_event = CommandStats(), CommandStats()
    per_bucket = [0] * (len(CommandStats.run_bounds_ns) + 1)
    for ns in times:
        per_bucket[bisect.bisect_left(CommandStats.run_bounds_ns, ns)] += 1
        by_event.command(Event(0, 0, EventKind.IOCTL, abi.KV_CPU_STEP_ADVANCE, 0, 0, b"", (), 0, 0, ns))
    by_run.step_run(len(times), sum(times), per_bucket)
    assert (by_run.commands, by_run.hist, by_run.hist_sum_ns, by_run.faults) == \
        (by_event.commands, by_event.hist, by_event.hist_sum_ns, by_event.faults)


@pytest.mark.skipif(os.geteuid() != 0, reason="leaving SCHED_IDLE needs CAP_SYS_NICE")
def test_a_filling_ring_raises_the_idle_drainer_once_until_it_lowers_itself() -> None:
    """The drainer runs under SCHED_IDLE; a ring a quarter full (here: 16
    of 64) makes the fast path set it to SCHED_OTHER, once, until it says
    it has lowered itself again."""
    native = NativeDriver(ring_events=64)
    priority = PythonPriority(native)
    ready, done = threading.Event(), threading.Event()
    tid = 0

    def drainer() -> None:
        nonlocal tid
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        tid = threading.get_native_id()
        ready.set()
        done.wait(10)

    thread = threading.Thread(target=drainer)
    thread.start()
    try:
        ready.wait(10)
        priority.raise_when_behind(tid)

        def step() -> None:
            native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 1))

        for _ in range(15):
            step()
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE and priority.stats()["python_raised"] == 0
        step()  # the 16th
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER and priority.stats()["python_raised"] == 1
        step()
        assert priority.stats()["python_raised"] == 1  # once
        native.drain()
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        priority.raise_when_behind(tid)  # "lowered again"
        for _ in range(16):
            step()
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER and priority.stats()["python_raised"] == 2
    finally:
        done.set()
        thread.join()
        native.close()


def test_a_drain_is_one_pass_over_what_was_there() -> None:
    """Events that arrive while a drain delivers (here: ioctls a listener
    makes) wait for the next drain, instead of being chased a few at a
    time; a read after an ioctl still sees it, since its event came first."""
    native = NativeDriver()
    seen: list[int] = []

    def listener(ev: Event) -> None:
        seen.append(ev.seq)
        if len(seen) <= 3:
            native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", 100 + len(seen)))

    native.add_listener(Events(listener))
    for step in range(3):
        native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
    assert native.drain() == 3 and native.ring_stats()["ring_depth"] == 3
    assert native.drain() == 3 and seen == [1, 2, 3, 4, 5, 6]
    native.close()


def test_a_raise_the_kernel_refuses_is_counted_once() -> None:
    """Without CAP_SYS_NICE (a container, --runas) the kernel refuses the
    raise; the fast path counts it and does not retry on every command
    (here the refusal is ESRCH: no such thread)."""
    native = NativeDriver(ring_events=64)
    priority = PythonPriority(native)
    priority.raise_when_behind(2**31 - 1)
    for step in range(40):
        native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
    assert priority.stats()["python_raised"] == 0 and priority.stats()["python_raise_refused"] == 1
    native.close()


def test_the_daemon_counts_commands_before_loading_prometheus() -> None:
    """prometheus-client (3 MB of an idle daemon) loads on the first read
    of ``metrics``; the counting starts with the first command anyway."""
    code = """
import struct, sys, types
from kvcpu_dev import bench
from kvcpu_dev.device import abi
from kvcpu_dev.driver.handle import NativeDriver
driver = NativeDriver()
b = bench.Bench(driver, "kvx", model_config=lambda: None, model_view=lambda: None)
attrs = {a.name: a for a in b.attributes()}
for step in range(3):
    driver.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
driver.drain()
print("prometheus_client" in sys.modules)
print(attrs["metrics"].show())
print("prometheus_client" in sys.modules)
driver.close()
"""
    lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert (lines[0], lines[-1]) == ("False", "True")
    assert 'kvcpu_commands_total{command="STEP",errno="none"} 3.0' in lines


class FailsOnStep(NoModel):
    """A model with a bug: STEP_ADVANCE to ``bad`` raises."""

    def __init__(self, bad: int):
        self.bad = bad
        self.seen: list[int] = []
        self.lost = 0

    def mmio_write(self, offset: int, value: int) -> None:
        if offset == regs.STEP_ADVANCE and value == self.bad:
            raise RuntimeError("model bug")
        self.seen.append(value)

    def events_lost(self, count: int) -> None:
        self.lost += count


def test_an_event_the_model_raises_on_is_consumed_and_the_drain_goes_on() -> None:
    model = FailsOnStep(bad=3)
    native = NativeDriver(model)
    try:
        for step in range(6):
            native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
        with pytest.raises(RuntimeError):
            native.drain()
        assert native.drain() == 2  # not delivered again
    finally:
        native.close()
    assert model.seen == [0, 1, 2, 4, 5]  # only the bad STEP is skipped


def test_the_daemon_keeps_serving_when_the_model_raises() -> None:
    """Server._drain: the failure is logged once, counted, and the
    model told it is out of sync; the next drain goes on."""
    from kvcpu_dev.daemon.server import Server

    model = FailsOnStep(bad=1)
    native = NativeDriver(model)
    server = Server.__new__(Server)  # only what _drain uses
    server.driver, server.ring, server.model, server.delivery_failures = native, native.reader, model, 0
    server.opts = unittest.mock.Mock()
    server.opts.name = "kvtest"
    try:
        for step in range(3):
            native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
        assert server._drain() == 1 and server.delivery_failures == 1 and model.lost == 1
        server._drain()
    finally:
        native.close()
    assert model.seen == [0, 2]


@pytest.mark.parametrize("steps", [[5], [1, 2, 3, 4, 5, 6]])
def test_the_model_applies_each_command_at_the_time_it_came(steps: list[int]) -> None:
    """A PREFETCH, then its target STEP 30 ms later, drained together: the
    DMA engine had those 30 ms to stage the block, so it is on time.
    Applied at drain time, both would land at the same instant and the
    prefetch would be judged late.  Several STEPs go as one run."""
    import time

    model = DeviceModel(ModelConfig(clock="wall", initial_tier=2))  # the block starts in T2
    model.incremental = True
    native = NativeDriver(model)
    try:
        native.ioctl(abi.KV_CPU_PREFETCH, struct.pack("<3Q", 0, model.block_size, 5))
        time.sleep(0.03)
        for step in steps:
            native.ioctl(abi.KV_CPU_STEP_ADVANCE, struct.pack("<Q", step))
        time.sleep(0.01)  # drained 10 ms later, as the daemon's poll does
        native.drain(finish=True)
        stats = model.stats()
    finally:
        native.close()
    assert (stats["prefetch_issued_hint"], stats["prefetch_on_time"], stats["prefetch_late"]) == (1, 1, 0)
    assert stats["now_ns"] >= 40_000_000  # an observation brings the model to the present


def test_a_backlog_defers_the_scan_to_once_per_poll() -> None:
    """server.Server._model_work: while the ring holds more, the pending
    scan (which the queued STEPs would supersede) waits until a poll
    period has passed since the last scan; with the ring drained it runs."""
    import time

    from kvcpu_dev.daemon.server import DRAIN_POLL_S, Server

    model = DeviceModel(ModelConfig())
    server = Server.__new__(Server)  # only what _model_work uses
    server.model = model
    server._scanned = time.monotonic()
    model.mmio_write(regs.STEP_ADVANCE, 1)
    server._model_work(backlog=True)
    assert model.has_pending() and model.counts["scans"] == 0
    server._model_work(backlog=False)
    assert not model.has_pending() and model.counts["scans"] == 1
    model.mmio_write(regs.STEP_ADVANCE, 2)
    server._scanned -= DRAIN_POLL_S
    server._model_work(backlog=True)
    assert not model.has_pending() and model.counts["scans"] == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 1, 1, 2, 3, 4, 5]), st.sampled_from([*KNOWN, 0x1234]),
                          st.sampled_from([0, 0, errno.EINVAL, errno.EIO]), st.integers(0, 3),
                          st.integers(0, 10**7), st.integers(0, 2**32 - 1)), max_size=120))
def test_the_counters_count_a_large_batch_in_numpy_as_one_event_at_a_time(rows: list[tuple]) -> None:
    """CommandStats.take counts a large batch with numpy; its command()
    (one event at a time) is what the counters mean.  Same counts, same
    histograms, same sums."""
    import numpy as np

    from kvcpu_dev.bench.stats import CommandStats
    from kvcpu_dev.driver.events import COLUMNS

    cols = np.zeros(len(rows), dtype=COLUMNS)
    for name, values in zip(("kind", "cmd", "err", "fault", "latency_us", "service_ns"), zip(*rows)):
        cols[name] = values
    by_numpy, by_event = CommandStats(), CommandStats()
    by_numpy._count_columns(cols)
    for kind, cmd, err, fault, latency_us, service_ns in rows:
        by_event.command(Event(0, 0, kind, cmd, 0, err, b"", (), fault, latency_us, service_ns))
    assert (by_numpy.commands, by_numpy.hist, by_numpy.hist_sum_ns, by_numpy.faults, by_numpy.stores,
            by_numpy.controls) == (by_event.commands, by_event.hist, by_event.hist_sum_ns, by_event.faults,
                                   by_event.stores, by_event.controls)


def test_the_helpers_view_of_the_shared_page_is_the_c_layout() -> None:
    """daemon/helper.py reads struct kv_shared with a struct format of its
    own (it loads no cffi): tie the two, and watch a write land."""
    from kvcpu_dev.daemon.helper import SharedPage
    from kvcpu_dev.native._fuse import ffi

    assert SharedPage.LAYOUT.size == ffi.sizeof("struct kv_shared")
    assert [name for name, _ in ffi.typeof("struct kv_shared").fields] == ["served", "delayed", "delayed_due_ns"]
    page = SharedPage()
    view = ffi.from_buffer("struct kv_shared *", page.page)
    view.served, view.delayed, view.delayed_due_ns = 7, 2, 123
    assert page.read() == (7, 2, 123)
