"""The driver's sysfs attributes, as files in the daemon's attribute
directory: names, modes, formats, kstrtou32 writes and their register writes."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from kvspec import FIELDS, U32_MAX, WEIGHT_FIELDS, WEIGHT_REGS

from live.harness import FcntlClient, TraceEntry

pytestmark = pytest.mark.live

WEIGHTS_RW = ["w_r", "w_f", "w_s", "w_d", "evict_thresh", "prefetch_thresh"]
READ_ONLY = ["current_step", "telemetry"]


def test_names_and_modes(dev):
    names = set(os.listdir(dev.attr_dir))
    assert set(WEIGHTS_RW + READ_ONLY) <= names
    for name in WEIGHTS_RW + READ_ONLY:
        st = os.stat(dev.attr_dir / name)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == (0o644 if name in WEIGHTS_RW else 0o444), name
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_defaults(dev):
    assert {n: dev.attr(n) for n in WEIGHTS_RW + ["current_step"]} == {
        "w_r": "1\n", "w_f": "1\n", "w_s": "2\n", "w_d": "200\n", "evict_thresh": "4096\n",
        "prefetch_thresh": "57344\n", "current_step": "0\n"}


def test_telemetry_format(dev):
    client = FcntlClient(dev.node)
    try:
        client.step(42)
        client.block("share", 0x7FABCDEF0000, 8192, 0)
        client.weights((U32_MAX, 2, 3, 4, 5, 6))
    finally:
        client.close()
    assert dev.attr("telemetry") == (
        "current_step=42\nstep_count=1\nhot_count=0\nevict_count=0\nprefetch_count=0\n"
        "share_count=1\nlast_va=0x7fabcdef0000\nlast_len=8192\nlast_target_step=0\n"
        "w_r=4294967295\nw_f=2\nw_s=3\nw_d=4\nevict_thresh=5\nprefetch_thresh=6\n")
    assert dev.attr("current_step") == "42\n"


def test_telemetry_defaults_text(dev):
    lines = dev.attr("telemetry").splitlines()
    assert [line.split("=")[0] for line in lines] == list(FIELDS)
    assert "last_va=0x0" in lines


def test_small_reads_see_one_rendering(shared_dev):
    """A reader using tiny read()s gets the same text as one big read."""
    whole = shared_dev.attr("telemetry").encode()
    fd = os.open(shared_dev.attr_dir / "telemetry", os.O_RDONLY)
    try:
        pieces = iter(lambda: os.read(fd, 7), b"")
        assert b"".join(pieces) == whole
    finally:
        os.close(fd)


def weights_of(telemetry: dict[str, int]) -> dict[str, int]:
    return {f: telemetry[f] for f in WEIGHT_FIELDS}


@pytest.mark.parametrize("text, value", [
    (b"5", 5), (b"5\n", 5), (b"+7\n", 7), (b"0x1F", 31), (b"0XaB\n", 0xAB), (b"010", 8),
    (b"0", 0), (b"4294967295\n", 2**32 - 1), (b"0xffffffff", 2**32 - 1),
], ids=repr)
def test_write_accepted(shared_dev, text, value):
    dev = shared_dev
    mark, before = dev.mark(), dev.telemetry()
    assert dev.write_attr("w_s", text) == 0
    assert dev.attr("w_s") == f"{value}\n"
    weights = weights_of(before) | {"w_s": value}
    assert dev.telemetry() == before | weights
    # The store re-sends all six weight registers, as SET_WEIGHTS does.
    assert dev.trace(since=mark) == [TraceEntry(
        "sysfs", {"w_s": value}, [(r, weights[f]) for r, f in zip(WEIGHT_REGS, WEIGHT_FIELDS)])]


@pytest.mark.parametrize("text, code", [
    (b"\n", errno.EINVAL), (b"abc", errno.EINVAL), (b" 5", errno.EINVAL), (b"5 ", errno.EINVAL),
    (b"-1", errno.EINVAL), (b"5\n\n", errno.EINVAL), (b"0x", errno.EINVAL), (b"08", errno.EINVAL),
    (b"1.5", errno.EINVAL), (b"++1", errno.EINVAL),
    (b"4294967296", errno.ERANGE), (b"0x100000000\n", errno.ERANGE),
    (b"99999999999999999999999", errno.ERANGE),
], ids=repr)
def test_write_rejected(shared_dev, text, code):
    dev = shared_dev
    mark, before, shown = dev.mark(), dev.telemetry(), dev.attr("w_d")
    assert dev.write_attr("w_d", text) == code
    assert dev.attr("w_d") == shown
    assert dev.telemetry() == before
    assert dev.register_writes(since=mark) == []


@pytest.mark.parametrize("name", WEIGHTS_RW)
def test_each_weight_attribute_writes_its_field(shared_dev, name):
    before = shared_dev.telemetry()
    value = 1000 + WEIGHTS_RW.index(name)
    assert shared_dev.write_attr(name, b"%d\n" % value) == 0
    assert shared_dev.telemetry() == before | {name: value}
    assert shared_dev.attr(name) == f"{value}\n"


@pytest.mark.parametrize("name", READ_ONLY)
@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR], ids=["wronly", "rdwr"])
def test_read_only_attributes_refuse_writes(shared_dev, name, flags):
    """Even root cannot open them for writing (as sysfs: EACCES)."""
    before = shared_dev.telemetry()
    with pytest.raises(OSError) as exc:
        os.open(shared_dev.attr_dir / name, flags)
    assert exc.value.errno == errno.EACCES
    assert shared_dev.telemetry() == before


def test_attributes_follow_ioctls(dev):
    dev.step(12345)
    client = FcntlClient(dev.node)
    try:
        client.weights((9, 8, 7, 6, 5, 4))
    finally:
        client.close()
    assert dev.attr("current_step") == "12345\n"
    assert [dev.attr(n) for n in WEIGHTS_RW] == ["9\n", "8\n", "7\n", "6\n", "5\n", "4\n"]


def test_attribute_files_cannot_be_created_or_chmoded(shared_dev):
    with pytest.raises(OSError):
        os.open(shared_dev.attr_dir / "new_attr", os.O_WRONLY | os.O_CREAT, 0o644)
    with pytest.raises(OSError):
        os.chmod(shared_dev.attr_dir / "w_r", 0o666)
    assert stat.S_IMODE(os.stat(shared_dev.attr_dir / "w_r").st_mode) == 0o644
