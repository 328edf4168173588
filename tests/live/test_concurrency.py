"""Many clients at once: every command is counted exactly once, and every
telemetry snapshot is one instant's."""

from __future__ import annotations

import subprocess
import threading

import pytest
from kvspec import COUNTERS, WEIGHT_FIELDS

from live.harness import FcntlClient

pytestmark = pytest.mark.live

PROCESSES, COMMANDS = 4, 2000  # kvclient loop: step, hot, evict, prefetch, share, step, ...


def spawn(kvclient, node, *args):
    return subprocess.Popen([str(kvclient), str(node), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args!r}: exit {proc.returncode}: {out} {err}"
    return out.strip()


def test_processes_counted_exactly(dev, kvclient):
    procs = [spawn(kvclient, dev.node, "loop", COMMANDS) for _ in range(PROCESSES)]
    assert [finish(p) for p in procs] == [f"done {COMMANDS}"] * PROCESSES
    t = dev.telemetry()
    each = PROCESSES * COMMANDS // 5
    assert {c: t[c] for c in COUNTERS} == dict.fromkeys(COUNTERS, each)
    assert t["current_step"] % 5 == 0 and t["current_step"] < COMMANDS
    assert t["last_len"] == 4096


def test_threads_on_one_descriptor(dev):
    """Python threads sharing one fd (fcntl.ioctl releases the GIL)."""
    client = FcntlClient(dev.node)
    per_thread = 300

    def work(i: int) -> None:
        for n in range(per_thread):
            client.step(n)
            client.block("hot", 0x1000 * (i + 1), 64, 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        t = client.telemetry()
    finally:
        client.close()
    assert (t["step_count"], t["hot_count"]) == (4 * per_thread, 4 * per_thread)


def test_telemetry_snapshots_are_consistent(dev, kvclient):
    """One writer sets the weights to (k,k,k,k,k,k) for k = 1..N while C
    readers (ioctl) and a Python reader (the telemetry attribute) look: the
    six fields are equal in every snapshot."""
    n = 3000
    torn_attr: list[str] = []
    done = threading.Event()

    def read_attribute() -> None:
        while not done.is_set():
            text = dev.attr("telemetry")
            weights = {line.split("=")[1] for line in text.splitlines()[9:]}
            if len(weights) != 1:
                torn_attr.append(text)

    client = FcntlClient(dev.node)
    client.weights((0,) * 6)  # the defaults are not six equal values
    client.close()
    attr_reader = threading.Thread(target=read_attribute)
    readers = [spawn(kvclient, dev.node, "tloop", n) for _ in range(2)]
    writer = spawn(kvclient, dev.node, "wloop", n)
    attr_reader.start()
    try:
        assert finish(writer) == f"done {n}"
        results = [finish(r).split() for r in readers]
    finally:
        done.set()
        attr_reader.join()
    for result in results:
        assert result[:2] == ["inconsistent", "0"], result
    assert torn_attr == []
    assert {f: dev.telemetry()[f] for f in WEIGHT_FIELDS} == dict.fromkeys(WEIGHT_FIELDS, n)
