"""ModelConfig: defaults, TOML, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcpu_dev.model import ModelConfig
from kvcpu_dev.model.config import parse_duration, parse_rate, parse_size

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "model.toml"


def test_defaults_follow_the_collateral():
    c = ModelConfig()
    assert (c.entries, c.clock, c.initial_tier) == (65536, "sim", 0)
    hbm, t1, t2, t3 = c.tiers
    assert (hbm.capacity, hbm.bandwidth, hbm.latency) == (80e9, 3e12, 1e-6)
    assert (t1.bandwidth, t1.latency) == (200e9, 150e-9)
    assert (t2.capacity, t2.bandwidth, t2.latency) == (2e12, 256e9, 40e-6)
    assert (t3.capacity, t3.bandwidth, t3.latency) == (16e12, 32e9, 300e-6)


def test_the_example_file_spells_out_the_defaults():
    assert ModelConfig.from_toml(EXAMPLE) == ModelConfig()


def test_units():
    assert parse_size("2MiB") == 2 * 2**20 and parse_size("80GB") == 80 * 10**9 and parse_size(4096) == 4096
    assert parse_rate("3TB/s") == 3e12 and parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("150ns") == pytest.approx(150e-9)
    with pytest.raises(ValueError):
        parse_size("2 parsecs")


def test_overrides_from_a_command_line():
    c = ModelConfig().replace(entries="1024", block_size="64KiB", clock="wall", step_period="2ms",
                              t1_capacity="1GB", hbm_latency=None)
    assert (c.entries, c.block_size, c.clock, c.step_period) == (1024, 65536, "wall", 0.002)
    assert c.tiers[1].capacity == 10**9 and c.tiers[0].latency == 1e-6
    assert c.capacity_blocks()[1] == 10**9 // 65536


def test_to_toml_round_trips(tmp_path):
    c = ModelConfig().replace(entries=77, t3_bandwidth="1GB/s", initial_tier="t2")
    path = tmp_path / "m.toml"
    path.write_text(c.to_toml())
    assert ModelConfig.from_toml(path) == c


@pytest.mark.parametrize("text, message", [
    ("entires = 5\n", "unknown key 'entires'"),
    ("[tiers.t5]\ncapacity = 1\n", "unknown tier 't5'"),
    ("[tiers.t1]\nspeed = 1\n", "unknown key 'tiers.t1.speed'"),
    ('clock = "sundial"\n', "clock must be 'sim' or 'wall'"),
    ("entries = 0\n", "entries must be in"),
    ("entries = [\n", "m.toml"),
])
def test_bad_files_are_one_line_value_errors(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        ModelConfig.from_toml(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError, match="unknown model option 'warp'"):
        ModelConfig().replace(warp=9)
