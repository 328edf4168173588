"""A C program built against <linux/kv_cpu.h> (tests/c/kvclient.c) drives
the node: every command's effect on telemetry and on the register trace."""

from __future__ import annotations

import pytest
from kvspec import COUNTERS, DEFAULTS

from live.harness import CClient

pytestmark = pytest.mark.live


@pytest.mark.parametrize("client", ["c"], indirect=True)
def test_scenario(client, scenario, check_scenario):
    check_scenario(client, scenario)


def test_defaults_at_load(dev, kvclient):
    assert CClient(dev.node, kvclient).telemetry() == DEFAULTS


def test_telemetry_as_c_sees_it(dev, kvclient):
    """The C struct, filled by the node, field by field."""
    client = CClient(dev.node, kvclient)
    client.block("prefetch", 0x1122334455667788, 0x99, 0xAABB)
    client.weights((0x10, 0x20, 0x30, 0x40, 0x50, 0x60))
    assert client.telemetry() == DEFAULTS | dict(
        prefetch_count=1, last_va=0x1122334455667788, last_len=0x99, last_target_step=0xAABB,
        w_r=0x10, w_f=0x20, w_s=0x30, w_d=0x40, evict_thresh=0x50, prefetch_thresh=0x60)


def test_loop_mode(dev, kvclient):
    """kvclient's loop (used by the concurrency tests) issues what it says."""
    client = CClient(dev.node, kvclient)
    assert client.run("loop", 10) == "done 10"
    t = dev.telemetry()
    assert [t[c] for c in COUNTERS] == [2, 2, 2, 2, 2]
    assert (t["current_step"], t["last_target_step"], t["last_len"]) == (5, 0, 4096)
