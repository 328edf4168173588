"""A bounded soak: what a hardware architect's stress test must be able to
trust.  Two C processes flood random STEP / HOT / EVICT / PREFETCH / SHARE
at the node; afterwards the model has seen every command the device
answered (its hint counters are the driver's), and a model view read in
the middle of the flood answers without waiting for the flood to end."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.live

FLOOD_S = 3.0
#: A view must answer well before the flood ends (the target is 100 ms;
#: this bound only has to tell "answered" from "waited for the flood").
VIEW_BOUND_S = 1.0


def keyvals(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split("=", 1) for line in text.splitlines()) if v.lstrip("-").isdigit()}


def flood(kvclient, node, seeds=(1, 2)) -> list[subprocess.Popen]:
    return [subprocess.Popen([str(kvclient), str(node), "mixed", str(FLOOD_S), "100000", str(seed)],
                             stdout=subprocess.PIPE, text=True) for seed in seeds]


def test_a_mixed_flood_reaches_the_model_whole_and_a_view_does_not_wait_for_it(dev, kvclient):
    clients = flood(kvclient, dev.node)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        during = keyvals(dev.attr("model_stats"))
        took = time.monotonic() - t0
        answered_during_the_flood = all(c.poll() is None for c in clients)
        outputs = [c.communicate(timeout=60)[0].split() for c in clients]
    finally:
        for c in clients:
            c.kill()
            c.wait()
    assert all(out[0] == "done" for out in outputs), outputs
    assert answered_during_the_flood and took < VIEW_BOUND_S, f"a model view took {took:.2f} s"
    assert during["in_sync"] == 1
    commands = sum(int(out[1]) for out in outputs)
    t = dev.telemetry()
    stats = keyvals(dev.attr("model_stats"))
    ring = keyvals(dev.attr("fastpath"))
    assert ring["ring_dropped"] == 0 and ring["lossless"] == 1
    assert (stats["in_sync"], stats["events_lost"]) == (1, 0)
    assert (stats["steps"], stats["hint_hot"], stats["hint_evict"], stats["hint_prefetch"], stats["hint_share"]) \
        == (t["step_count"], t["hot_count"], t["evict_count"], t["prefetch_count"], t["share_count"])
    assert sum(t[k] for k in ("step_count", "hot_count", "evict_count", "prefetch_count", "share_count")) \
        == commands


def test_a_lossy_device_says_what_its_model_missed(daemons, kvclient):
    """--lossy: the ring drops when full, and the model says so (in_sync=0
    and how many) rather than describing a device that saw less."""
    dev = daemons("--lossy")
    clients = flood(kvclient, dev.node)
    for c in clients:
        c.communicate(timeout=60)
    stats = keyvals(dev.attr("model_stats"))
    ring = keyvals(dev.attr("fastpath"))
    assert ring["lossless"] == 0
    assert stats["events_lost"] == ring["ring_dropped"]
    assert stats["in_sync"] == (1 if ring["ring_dropped"] == 0 else 0)
