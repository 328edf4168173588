"""The fast path behind a live node: the C thread answers while Python is
busy, the ring's state is visible, and the model still sees every command
in order (a huge hint is applied in slices, with the STEP after it)."""

from __future__ import annotations

import fcntl
import os
import struct
import threading

import pytest
from kvspec import HOT, STEP

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


def test_the_fast_path_is_its_own_thread(dev):
    tasks = os.listdir(f"/proc/{dev.pid}/task")
    assert len(tasks) >= 2


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
