"""Errnos through the node: unknown commands (ENOTTY), bad pointers
(EFAULT), read()/write() (EINVAL).  None of them may change the state.
(Zero-length blocks, EINVAL, are in every client's scenarios.)"""

from __future__ import annotations

import errno
import fcntl
import os

import pytest
from kvspec import TELEMETRY

from live.harness import CClient, errno_of, ioc

pytestmark = pytest.mark.live

NONE, W, R = 0, 1, 2
K, L = ord("K"), ord("L")

#: (direction, type, nr, size): numbers the driver does not know.
UNKNOWN = {
    "_IO(K,0x7F)": (NONE, K, 0x7F, 0),
    "_IOW(K,0x08,u64)": (W, K, 0x08, 8),
    "_IOR(K,0x07,u64)": (R, K, 0x07, 8),  # telemetry's nr, another size
    "_IOW(K,0x01,24)": (W, K, 0x01, 24),  # step's nr, another size
    "_IOW(K,0x07,96)": (W, K, 0x07, 96),  # telemetry's nr and size, other direction
    "_IOWR(K,0x07,96)": (R | W, K, 0x07, 96),
    "_IO(K,0x01)": (NONE, K, 0x01, 0),
    "_IOR(K,0x01,u64)": (R, K, 0x01, 8),
    "_IOW(L,0x01,u64)": (W, L, 0x01, 8),  # another magic
}


def python_arg(direction: int, size: int):
    if size == 0:
        return 0
    return bytearray(size) if direction & R else bytes(size)


@pytest.mark.parametrize("how", ["c", "python"])
@pytest.mark.parametrize("number", UNKNOWN.values(), ids=UNKNOWN.keys())
def test_unknown_command_is_enotty(shared_dev, kvclient, how, number):
    before = shared_dev.telemetry()
    code = ioc(*number)
    if how == "c":  # with a valid 16 KiB buffer
        assert errno_of(CClient(shared_dev.node, kvclient).run, "raw", hex(code)) == errno.ENOTTY
    else:
        fd = shared_dev.open()
        try:
            assert errno_of(fcntl.ioctl, fd, code, python_arg(number[0], number[3])) == errno.ENOTTY
        finally:
            os.close(fd)
    assert shared_dev.telemetry() == before


@pytest.mark.parametrize("command", ["step", "hot", "evict", "prefetch", "share", "weights", "telemetry"])
def test_null_pointer_is_efault(shared_dev, kvclient, command):
    before = shared_dev.telemetry()
    client = CClient(shared_dev.node, kvclient)
    assert errno_of(client.run, "null", command) == errno.EFAULT
    assert shared_dev.telemetry() == before


def test_read_and_write_are_einval_from_c(shared_dev, kvclient):
    out = CClient(shared_dev.node, kvclient).run("readwrite")
    assert out.splitlines() == ["read EINVAL", "write EINVAL"]


@pytest.mark.parametrize("op", ["read", "write"])
def test_read_and_write_are_einval_from_python(shared_dev, op):
    before = shared_dev.telemetry()
    fd = shared_dev.open()
    try:
        call = (lambda: os.read(fd, 96)) if op == "read" else (lambda: os.write(fd, bytes(8)))
        assert errno_of(call) == errno.EINVAL
    finally:
        os.close(fd)
    assert shared_dev.telemetry() == before


@pytest.mark.parametrize("name", ["telemetry", "w_r"])
def test_attribute_files_answer_no_ioctl(shared_dev, name):
    fd = os.open(shared_dev.attr_dir / name, os.O_RDONLY)
    try:
        assert errno_of(fcntl.ioctl, fd, TELEMETRY, bytearray(96)) == errno.ENOTTY
    finally:
        os.close(fd)


def test_errors_leave_the_device_working(shared_dev, kvclient):
    client = CClient(shared_dev.node, kvclient)
    for _ in range(3):
        assert errno_of(client.run, "raw", hex(ioc(NONE, K, 0x7F, 0))) == errno.ENOTTY
        assert errno_of(client.run, "null", "hot") == errno.EFAULT
        assert errno_of(client.run, "hot", 0x1000, 0) == errno.EINVAL
    before = shared_dev.telemetry()
    client.step(before["current_step"] + 1)
    assert shared_dev.telemetry() == before | {
        "current_step": before["current_step"] + 1, "step_count": before["step_count"] + 1,
        "last_target_step": before["current_step"] + 1}
