"""The fast path behind a live node: the C thread answers while Python is
busy, the ring's state is visible, and the model still sees every command
in order (a huge hint is applied in slices, with the STEP after it)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import pathlib
import struct
import threading
import time
from typing import Any

import pytest
from kvspec import HOT, STEP

from live.harness import wait_until

pytestmark = pytest.mark.live


def attr_dict(d, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in d.attr(name).splitlines() if "=" in line)


def test_fastpath_attribute_reports_the_ring(dev):
    for i in range(10):
        dev.step(i)
    s = attr_dict(dev, "fastpath")
    assert int(s["served"]) >= 10
    assert s["ring_dropped"] == "0" and s["events_lost_seen"] == "0"
    assert int(s["ring_capacity"]) >= 1024 and s["ring_depth"] == "0"


def test_the_fast_path_is_its_own_named_thread(dev):
    """One "kvcpu-fast" thread (classic FUSE, CUSE); over io_uring, one
    "kvcpu-uringN" per CPU, each on its CPU.  Never Python's main thread."""
    names = {int(t): pathlib.Path(f"/proc/{dev.pid}/task/{t}/comm").read_text().strip()
             for t in os.listdir(f"/proc/{dev.pid}/task")}
    if dev.transport == "uring":
        queues = {name: tid for tid, name in names.items() if name.startswith("kvcpu-uring")}
        assert sorted(queues) == [f"kvcpu-uring{cpu}" for cpu in range(len(queues))] and queues
        for name, tid in queues.items():
            assert os.sched_getaffinity(tid) == {int(name.removeprefix("kvcpu-uring"))}
        fast = list(queues.values())
    else:
        fast = [tid for tid, name in names.items() if name == "kvcpu-fast"]
        assert len(fast) == 1
    assert dev.pid not in fast  # not Python's main thread


def test_a_whole_address_space_hint_does_not_stop_the_node(daemons):
    d = daemons("--set", "entries=65536")
    fd = d.open()
    try:
        fcntl.ioctl(fd, HOT, struct.pack("<QQQ", 0, 2**64 - 1, 0))
        # While the model walks 65536 entries, the node and the driver's
        # attributes answer at once.
        for i in range(1, 101):
            fcntl.ioctl(fd, STEP, struct.pack("<Q", i))
        assert d.attr("current_step") == "100\n"
    finally:
        os.close(fd)
    s = attr_dict(d, "model_stats")  # a model view: everything before it applied
    assert s["current_step"] == "100" and int(s["steps"]) == 100
    assert int(s["live_entries"]) > 0 and s["in_sync"] == "1"


def test_concurrent_clients_counters_exact(dev):
    def hammer() -> None:
        fd = dev.open()
        try:
            for i in range(2000):
                fcntl.ioctl(fd, HOT, struct.pack("<QQQ", i << 21, 1 << 21, 0))
        finally:
            os.close(fd)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dev.telemetry()["hot_count"] == 8000
    assert int(attr_dict(dev, "model_stats")["hint_hot"]) == 8000


def _flood(node: str, seconds: float, sent: Any) -> None:
    fd = os.open(node, os.O_RDWR)
    try:
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            for _ in range(200):
                step += 1
                fcntl.ioctl(fd, STEP, struct.pack("<Q", step))
        with sent.get_lock():
            sent.value += step
    finally:
        os.close(fd)


def test_a_flood_on_every_cpu_keeps_the_books(dev):
    """Clients on every CPU, back to back, leave Python's SCHED_IDLE drain
    no idle time; the fast path raises it once the ring fills (the
    fastpath attribute counts that, and the kernel's refusals), and
    whatever was lost anyway is
    counted the same in the ring, the drain and the model, which then
    says it is out of sync.  The driver's counters stay exact."""
    ctx = multiprocessing.get_context("fork")
    sent = ctx.Value("Q", 0)
    procs = [ctx.Process(target=_flood, args=(str(dev.node), 2.0, sent))
             for _ in range(2 * (os.cpu_count() or 1) + 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    s = attr_dict(dev, "model_stats")
    f = attr_dict(dev, "fastpath")
    lost = int(f["ring_dropped"])
    assert int(f["events_lost_seen"]) == lost == int(s["events_lost"])
    assert s["in_sync"] == ("0" if lost else "1")
    assert int(s["steps"]) == sent.value - lost
    assert dev.telemetry()["step_count"] == sent.value
    # Whatever was lost, the fast path tried to raise the drainer first
    # (a container without CAP_SYS_NICE refuses it: counted too).
    assert int(f["python_raised"]) + int(f["python_raise_refused"]) >= (1 if lost else 0)


def _policies(pid: int) -> dict[str, int]:
    """Each thread's scheduling policy by name (field 41 of its stat)."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        out[f"{comm}/{task.name}"] = int(stat[stat.rindex(")") + 2:].split()[38])
    return out


def test_the_reader_threads_are_real_time_only_while_a_request_starves(daemons):
    """The watcher raises the reader-facing threads only while a request
    waits for a thread that waits for a CPU (tests/test_watch.py drives
    that); a long request the thread runs itself (a model view that first
    applies a hint over 65,536 entries) leaves every thread but the watcher
    as it was, afterwards at least, on a loaded machine too."""
    d = daemons("--set", "entries=65536")
    fd = d.open()
    try:
        fcntl.ioctl(fd, HOT, struct.pack("<QQQ", 0, 2**64 - 1, 0))
    finally:
        os.close(fd)
    assert int(attr_dict(d, "model_stats")["live_entries"]) > 0
    f = attr_dict(d, "fastpath")  # a slow machine (UML) may give that view up as stuck: counted, not asserted
    assert {"readers_starved", "readers_boost_refused", "readers_boost_capped", "readers_given_up"} <= f.keys()
    assert wait_until(lambda: {name.split("/")[0] for name, policy in _policies(d.pid).items()
                               if policy in (os.SCHED_FIFO, os.SCHED_RR)} <= {"kvcpu-watch"}, timeout=2)
