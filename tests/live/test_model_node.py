"""The device model behind a live node: its attribute files, its
configuration from --config and --set, and its deferred scans (answered
first, superseded by a later STEP, run once the node is quiet)."""

from __future__ import annotations

import json
import subprocess

import pytest
from kvspec import HOT, SHARE

from live.harness import KVCTL, wait_until

pytestmark = pytest.mark.live

MODEL_ATTRS = ("model_stats", "tiers", "dma", "blocks", "model_config")


def stats(d) -> dict[str, str]:
    return dict(line.split("=", 1) for line in d.attr("model_stats").splitlines() if "=" in line)


def test_model_attributes_sit_beside_the_drivers(dev):
    for name in MODEL_ATTRS:
        assert (dev.attr_dir / name).exists(), name
    assert 'clock = "wall"' in dev.attr("model_config").splitlines()  # model_config is TOML


def test_back_to_back_steps_supersede_scans_that_run_once_quiet(dev):
    n = 300
    for i in range(1, n + 1):
        dev.step(i)
    # the scan deferred by the burst runs once the steps stop
    assert wait_until(lambda: stats(dev)["scan_pending"] == "0", timeout=5)
    s = stats(dev)
    assert int(s["steps"]) == n
    assert s["scan_pending"] == "0"
    assert int(s["scans"]) >= 1
    assert int(s["scans"]) + int(s["scans_superseded"]) == n


def test_hints_reach_the_block_directory(dev):
    block = 2 << 20
    fd = dev.open()
    try:
        import fcntl
        import struct
        fcntl.ioctl(fd, HOT, struct.pack("<QQQ", 4 * block, 2 * block, 0))
        fcntl.ioctl(fd, SHARE, struct.pack("<QQQ", 8 * block, block, 0))
    finally:
        import os
        os.close(fd)
    rows = [line.split() for line in dev.attr("blocks").splitlines() if not line.startswith("#")]
    vas = sorted(int(r[0], 16) for r in rows)
    assert vas == [4 * block, 5 * block, 8 * block]
    assert stats(dev)["live_entries"] == "3"


def test_config_file_and_set_options_shape_the_model(daemons, tmp_path):
    config = tmp_path / "model.toml"
    config.write_text('entries = 2048\nblock_size = "1MiB"\n[tiers.t1]\ncapacity = "64GB"\n')
    d = daemons("--config", str(config), "--set", "entries=4096")
    effective = d.attr("model_config")
    assert "entries = 4096" in effective.splitlines()
    assert str(1 << 20) in effective and str(64 * 10**9) in effective
    assert stats(d)["entries"] == "4096"


@pytest.mark.parametrize("args, message", [
    (("--set", "bogus=1"), "unknown model option"),
    (("--set", "entries"), "KEY=VALUE"),
    (("--set", "block_size=-1"), "block_size"),
])
def test_bad_model_configuration_is_one_line_and_exit_1(daemons, args, message):
    d = daemons(start=False)
    result = d.start(*args, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not d.link.is_symlink()


def test_kvctl_stats_and_blocks_through_the_node(dev):
    dev.step(3)
    env_device = ["--device", str(dev.node)]
    out = subprocess.run([KVCTL, *env_device, "stats", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["current_step"] == 3
    out = subprocess.run([KVCTL, *env_device, "blocks", "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout) == []
