"""Python runtimes reach the node with os.open + fcntl.ioctl (ctypes
structs), with the KvCpu client class, and with kvctl in a subprocess."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import subprocess

import pytest
from kvspec import DEFAULTS, FIELDS, SHARE, STEP, TELEMETRY, TELEMETRY_INFO, U32_MAX, WEIGHT_FIELDS

from kvcpu_dev.client import KvCpu

pytestmark = pytest.mark.live


@pytest.mark.parametrize("client", ["fcntl", "kvcpu", "kvctl"], indirect=True)
def test_scenario(client, scenario, check_scenario):
    check_scenario(client, scenario)


@pytest.mark.parametrize("kind", ["fcntl", "kvcpu", "kvctl"])
def test_defaults_at_load(dev, make_client, kind):
    assert make_client(kind, dev.node).telemetry() == DEFAULTS


def test_bytes_and_bytearray_payloads(dev):
    """fcntl.ioctl with plain bytes for _IOW and a bytearray for _IOR."""
    fd = dev.open()
    try:
        payload = struct.pack("<3Q", 0xABC000, 512, 0)
        assert fcntl.ioctl(fd, SHARE, payload) == payload  # _IOW: nothing copied back
        buf = bytearray(96)
        assert fcntl.ioctl(fd, TELEMETRY, buf) == 0
        assert TELEMETRY_INFO.unpack(buf)[5:8] == (1, 0xABC000, 512)
        # Immutable bytes for an _IOR: fcntl returns the reply as new bytes.
        reply = fcntl.ioctl(fd, TELEMETRY, bytes(96))
        assert TELEMETRY_INFO.unpack(reply)[5] == 1
    finally:
        os.close(fd)


def test_many_opens_share_one_state_and_close_changes_nothing(dev):
    fds = [dev.open() for _ in range(8)]
    try:
        for i, fd in enumerate(fds):
            fcntl.ioctl(fd, STEP, struct.pack("<Q", 100 + i))
        before = dev.telemetry()
        assert (before["step_count"], before["current_step"]) == (8, 107)
        for fd in fds[:-1]:
            os.close(fd)
        buf = bytearray(96)
        fcntl.ioctl(fds[-1], TELEMETRY, buf)  # the one still open
        assert dict(zip(FIELDS, TELEMETRY_INFO.unpack(buf))) == before
    finally:
        os.close(fds[-1])
    assert dev.telemetry() == before  # a new open, after every close


def test_open_needs_no_arguments_and_readonly_open_works(dev):
    fd = os.open(dev.node, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, STEP, struct.pack("<Q", 5))
    finally:
        os.close(fd)
    assert dev.telemetry()["current_step"] == 5


# -- the KvCpu class -----------------------------------------------------------------


def test_kvcpu_weights_and_update(dev):
    with KvCpu(dev.node) as k:
        assert k.weights()._asdict() == {f: DEFAULTS[f] for f in WEIGHT_FIELDS}
        assert k.update_weights(w_d=7, prefetch_thresh=U32_MAX)._asdict() == dict(
            w_r=1, w_f=1, w_s=2, w_d=7, evict_thresh=4096, prefetch_thresh=U32_MAX)
        with pytest.raises(ValueError):
            k.update_weights(w_x=1)
        assert k.telemetry().w_d == 7  # type: ignore[attr-defined]  # client.Telemetry's fields are built at run time
        with pytest.raises(OSError) as exc:
            k.mark_hot(0x1000, 0)
        assert exc.value.errno == errno.EINVAL


def test_kvcpu_default_device_from_environment(dev, monkeypatch):
    monkeypatch.setenv("KVCPU_DEVICE", str(dev.node))
    with KvCpu() as k:
        k.step(3)
    assert dev.telemetry()["current_step"] == 3


# -- kvctl ---------------------------------------------------------------------------


def kvctl_run(kvctl, *args, env=None):
    return subprocess.run([kvctl, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.mark.parametrize("text, value", [
    ("10", 10), ("0x10", 16), ("0X1f", 31), ("010", 8),
    ("18446744073709551615", 2**64 - 1), ("0xffffffffffffffff", 2**64 - 1),
    ("-1", 2**64 - 1), ("-0x1000", 2**64 - 0x1000), (" +7", 7),  # strtoull wraps a minus
])
def test_kvctl_numbers_like_strtoull(shared_dev, kvctl, text, value):
    r = kvctl_run(kvctl, "--device", shared_dev.node, "prefetch", text, text, text)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    t = shared_dev.telemetry()
    assert (t["last_va"], t["last_len"], t["last_target_step"]) == (value, value, value)


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["step"], ["step", "1", "2"], ["hot", "1"], ["prefetch", "1", "2"],
    ["step", "12abc"], ["step", "0x"], ["step", "08"], ["step", ""], ["hot", "1", "2.5"],
    ["step", "--", "5"], ["step", "--help"], ["step", "-h"], ["step", "1 "],
    ["step", "18446744073709551616"],
], ids=repr)
def test_kvctl_usage_errors(shared_dev, kvctl, args):
    before = shared_dev.telemetry()
    r = kvctl_run(kvctl, "--device", shared_dev.node, *args)
    assert r.returncode == 1
    assert "usage" in r.stderr.lower() and r.stdout == ""
    assert shared_dev.telemetry() == before


@pytest.mark.parametrize("args, label", [
    (["hot", "0x1000", "0"], "HOT"), (["evict", "0x1000", "0"], "EVICT"),
    (["prefetch", "0x1000", "0", "5"], "PREFETCH"), (["share", "0x1000", "0"], "SHARE"),
])
def test_kvctl_ioctl_failure_message(shared_dev, kvctl, args, label):
    before = shared_dev.telemetry()
    r = kvctl_run(kvctl, "--device", shared_dev.node, *args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"ioctl {label}: Invalid argument\n")
    assert shared_dev.telemetry() == before


def test_kvctl_open_failure_message(tmp_path, kvctl):
    missing = tmp_path / "nothing-here"
    r = kvctl_run(kvctl, "--device", missing, "step", "1")
    assert r.returncode == 1 and r.stdout == ""
    first, hint = r.stderr.splitlines()  # the reference's line, then what to do
    assert first == f"open {missing}: No such file or directory"
    assert hint.startswith("kvctl: no device there; start one with 'kvcpu-dev --mock")


def test_kvctl_device_from_environment(dev, kvctl):
    env = dict(os.environ, KVCPU_DEVICE=str(dev.node))
    assert kvctl_run(kvctl, "step", "9", env=env).returncode == 0
    assert dev.telemetry()["current_step"] == 9


def test_kvctl_telemetry_json_keys_and_table(shared_dev, kvctl):
    shared_dev.step(4)
    r = kvctl_run(kvctl, "--device", shared_dev.node, "telemetry", "--json")
    data = json.loads(r.stdout)
    assert list(data) == list(FIELDS)
    assert data == shared_dev.telemetry()
    table = kvctl_run(kvctl, "--device", shared_dev.node, "telemetry").stdout
    for field in FIELDS:
        assert field in table


def test_kvctl_weights_show_and_set_subset(shared_dev, kvctl):
    before = shared_dev.telemetry()
    r = kvctl_run(kvctl, "--device", shared_dev.node, "weights", "w_s=0x10", "evict_thresh=4294967295")
    assert r.returncode == 0, r.stderr
    assert shared_dev.telemetry() == before | dict(w_s=16, evict_thresh=2**32 - 1)
    shown = kvctl_run(kvctl, "--device", shared_dev.node, "weights", "--json")
    assert json.loads(shown.stdout) == {f: shared_dev.telemetry()[f] for f in WEIGHT_FIELDS}
    bad = kvctl_run(kvctl, "--device", shared_dev.node, "weights", "w_q=1")
    assert bad.returncode == 1
    assert shared_dev.telemetry() == before | dict(w_s=16, evict_thresh=2**32 - 1)


def test_kvctl_weights_says_when_a_value_is_wider_than_the_register(dev, kvctl):
    """The driver takes 32 bits, the device's weight registers 8 (thresholds
    16): kvctl sets it, as the driver accepts it, and says on stderr what
    the register holds (issue 22: before, only kvctl stats showed it)."""
    r = kvctl_run(kvctl, "--device", dev.node, "weights", "w_r=999", "evict_thresh=0x10000", "w_f=255")
    assert (r.returncode, r.stdout.split()[:2]) == (0, ["w_r", "999"]), r.stderr
    assert r.stderr.splitlines() == [
        "kvctl: note: w_r=999 does not fit the device's 8-bit register, which holds 231 (999 mod 256); "
        "set anyway, as the driver accepts it (telemetry shows 999)",
        "kvctl: note: evict_thresh=65536 does not fit the device's 16-bit register, which holds 0 "
        "(65536 mod 65536); set anyway, as the driver accepts it (telemetry shows 65536)",
    ]
    assert dev.telemetry()["w_r"] == 999
    stats = kvctl_run(kvctl, "--device", dev.node, "stats").stdout
    assert "register_truncations=2" in stats.splitlines()
    quiet = kvctl_run(kvctl, "--device", dev.node, "weights", "w_r=3")
    assert (quiet.returncode, quiet.stderr) == (0, "")
