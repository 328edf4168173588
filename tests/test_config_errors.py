"""Every bad model configuration value is one line naming its key, from
--set, from a TOML file, and through the kvcpu-dev command (exit 1, no
traceback); non-finite and out-of-range numbers are refused (issue 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvcpu_dev.model import ModelConfig
from kvcpu_dev.model.config import LIMITS

BIG = "9" * 5000

SET_CASES = [
    ("step_period=1e999", "step_period"),
    ("block_size=1e400", "block_size"),
    ("t1_capacity=1e999GB", "t1_capacity"),
    (f"block_size={BIG}", "block_size"),
    ("step_period=1e-300", "step_period"),  # a 0 ns period
    ("hbm_bandwidth=inf", "hbm_bandwidth"),
    ("t2_bandwidth=1e17", "t2_bandwidth"),
    ("t3_capacity=1e30", "t3_capacity"),
    ("t1_latency=nan", "t1_latency"),
    ("entries=nan", "entries"),
    ("entries=1e3", "entries"),
    (f"entries={BIG}", "entries"),
    ("hot_protect_steps=-1", "hot_protect_steps"),
    ("r_decay_shift=9", "r_decay_shift"),
    ("step_period=7200", "step_period"),
]

TOML_CASES = [
    ("entries = [1, 2]\n", "entries"),
    ("entries = {a = 1}\n", "entries"),
    ("step_period = inf\n", "step_period"),
    ("step_period = nan\n", "step_period"),
    ("step_period = 1e-300\n", "step_period"),
    ("block_size = 1e400\n", "block_size"),
    ("entries = 1e400\n", "entries"),
    (f"block_size = {BIG}\n", None),  # TOML itself refuses an integer this long
    ("clock = 3\n", "clock"),
    ("entries = true\n", "entries"),
    ("[tiers.t1]\ncapacity = inf\n", "tiers.t1.capacity"),
    ("[tiers.hbm]\nbandwidth = inf\n", "tiers.hbm.bandwidth"),
    ("[tiers.t2]\nlatency = -1.0\n", "tiers.t2.latency"),
    ("[tiers.t3]\ncapacity = [1]\n", "tiers.t3.capacity"),
    ("[tiers]\nt1 = 5\n", "tiers.t1"),
]


@pytest.mark.parametrize("setting, key", SET_CASES, ids=[c[0][:30] for c in SET_CASES])
def test_set_values_are_one_line_errors_naming_the_key(setting, key):
    k, _, v = setting.partition("=")
    with pytest.raises(ValueError) as err:
        ModelConfig().replace(**{k: v})
    message = str(err.value)
    assert key in message and "\n" not in message and len(message) < 200, message


@pytest.mark.parametrize("text, key", TOML_CASES, ids=[c[0].strip()[:30] for c in TOML_CASES])
def test_toml_values_are_one_line_errors_naming_the_key(tmp_path, text, key):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        ModelConfig.from_toml(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    if key is not None:
        assert key in message, message


def test_the_limits_themselves_are_accepted():
    lo = ModelConfig().replace(entries=1, block_size=1, step_period=1e-9, hot_protect_steps=0,
                               r_decay_shift=0, t1_capacity=0, t1_bandwidth=1, t1_latency=0)
    assert (lo.entries, lo.block_size, lo.step_period) == (1, 1, 1e-9)
    hi = ModelConfig().replace(entries=2**24, block_size=2**40, step_period=3600,
                               hot_protect_steps=2**31, r_decay_shift=8, t3_capacity=2**60,
                               t3_bandwidth=1e16, t3_latency=3600)
    assert hi.tiers[3].capacity == 2**60
    assert set(LIMITS) >= {"entries", "block_size", "step_period", "capacity", "bandwidth", "latency"}


def test_limits_are_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "device-model.md").read_text()
    for key in LIMITS:
        assert f"`{key}`" in doc, f"{key} has no documented range"


def _kvcpu_dev() -> str | None:
    here = Path(sys.executable).parent / "kvcpu-dev"
    return str(here) if here.exists() else shutil.which("kvcpu-dev")


@pytest.mark.skipif(os.geteuid() != 0, reason="kvcpu-dev checks the model only as root")
@pytest.mark.parametrize("args", [
    ["--set", "step_period=1e999"], ["--set", "block_size=1e400"], ["--set", "t1_capacity=1e999GB"],
    ["--set", f"block_size={BIG}"], ["--set", "step_period=1e-300"], ["--set", "hbm_bandwidth=inf"],
    ["CONFIG", "entries=[1,2]\n"], ["CONFIG", "entries={a=1}\n"], ["CONFIG", "step_period=inf\n"],
    ["CONFIG", "[tiers.t1]\ncapacity=inf\n"], ["CONFIG", "[tiers.t2]\nbandwidth=inf\n"],
], ids=lambda a: " ".join(a)[:40])
def test_the_command_says_one_line_and_exits_1(tmp_path, args):
    exe = _kvcpu_dev()
    if exe is None:
        pytest.skip("kvcpu-dev is not installed")
    if args[0] == "CONFIG":
        (tmp_path / "m.toml").write_text(args[1])
        args = ["--config", str(tmp_path / "m.toml")]
    r = subprocess.run([exe, "--mock", "--name", "kvcfgtest", "--run-dir", str(tmp_path / "run"),
                        "--dev-dir", str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and r.stdout == "", r
    assert len(lines) == 1 and lines[0].startswith("kvcpu-dev: model configuration: "), r.stderr
    assert "Traceback" not in r.stderr
