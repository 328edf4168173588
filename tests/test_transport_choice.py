"""How a transport is chosen, without a daemon: --transport uring on a
kernel without FUSE over io_uring is one line naming the module
parameter; auto takes io_uring only when it is already on."""

from __future__ import annotations

import pathlib

import pytest

from kvcpu_dev.daemon.options import Options
from kvcpu_dev.transport import uring_param


def test_a_kernel_without_io_uring_is_one_line_naming_the_parameter(tmp_path):
    missing = tmp_path / "enable_uring"
    with pytest.raises(uring_param.UringUnavailable) as info:
        uring_param.switch_on("kvx", missing)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "CONFIG_FUSE_IO_URING" in message


def test_uring_switches_the_parameter_on_only_when_it_is_off(tmp_path, caplog):
    param = tmp_path / "enable_uring"
    param.write_text("N\n")
    with caplog.at_level("INFO", logger="kvcpu_dev"):
        uring_param.switch_on("kvx", param)
    assert param.read_text() == "Y\n" and "switched" in caplog.text
    caplog.clear()
    uring_param.switch_on("kvx", param)
    assert caplog.text == ""


@pytest.mark.parametrize(("cuse", "uring", "chosen"), [
    (True, True, "cuse"), (False, True, "uring"), (False, False, "fuse"), (False, None, "fuse")])
def test_auto_prefers_cuse_then_io_uring_already_on_then_classic(tmp_path, monkeypatch, cuse, uring, chosen):
    cuse_path = tmp_path / "cuse"
    if cuse:
        cuse_path.touch()
    monkeypatch.setattr(uring_param, "enabled", lambda param=pathlib.Path(): uring)
    assert Options(transport="auto", cuse_path=cuse_path).resolved_transport() == chosen
    assert Options(transport="fuse", cuse_path=cuse_path).resolved_transport() == "fuse"
