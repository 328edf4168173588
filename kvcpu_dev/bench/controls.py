"""The bench's control files beside the driver's attributes: injected
faults and the device's presence and resets.  Writable by the node's owner
(root) only, and by the node's group when the daemon is started with
--control-group (transport/attrfs.py); the driver's ioctls stay open to
whoever may open the node, as in the driver.

``faults``   read: one rule per line; write: ``add KEY=VALUE...``, ``del ID``
             or ``clear`` (see faults.py)
``control``  read: ``present=1 resets=N``; write: ``reset``, ``unplug`` or
             ``replug``
"""

from __future__ import annotations

import errno
import logging

from ..device.sysfs import Attribute, Caller
from ..device.tables import FaultMode
from ..driver.handle import FaultRule, NativeDriver
from . import faults

log = logging.getLogger("kvcpu_dev")

_MODES = {mode.name.lower(): int(mode) for mode in FaultMode}
_MODE_NAMES = {v: k for k, v in _MODES.items()}


def _invalid(why: str) -> OSError:
    log.warning("control write refused: %s", why)
    return OSError(errno.EINVAL, why)


def attributes(driver: NativeDriver) -> list[Attribute]:
    def show_faults() -> str:
        return faults.render(driver.faults(), _MODE_NAMES)

    def store_faults(buf: bytes, caller: Caller) -> None:
        words = buf.decode(errors="replace").split()
        if words == ["clear"]:
            driver.clear_faults()
        elif len(words) == 2 and words[0] == "del":
            try:
                rule_id = faults.parse_id(words[1])
            except ValueError as exc:
                raise _invalid(str(exc)) from None
            driver.delete_fault(rule_id)  # ENOENT if there is none
        elif words[:1] == ["add"]:
            try:
                rule = faults.parse_rule(words[1:])
            except ValueError as exc:
                raise _invalid(str(exc)) from None
            driver.add_fault(FaultRule(
                rule.cmd, rule.errno, _MODES[rule.mode], rule.n,
                min(round(rule.probability * 2**32), 2**32), rule.seed, rule.latency_ns))
        else:
            raise _invalid(f"expected add/del/clear, got {buf[:40]!r}")

    def show_control() -> str:
        return f"present={int(driver.present)}\nresets={driver.resets()}\n"

    def store_control(buf: bytes, caller: Caller) -> None:
        word = buf.decode(errors="replace").strip()
        if word == "reset":
            driver.reset()
        elif word in ("unplug", "replug"):
            # The node stays where it is (a daemon under --runas could not
            # put it back): opening it, like any command, answers ENODEV.
            driver.present = word == "replug"
        else:
            raise _invalid(f"expected reset, unplug or replug, got {buf[:40]!r}")

    return [
        Attribute("faults", show_faults, store_faults, control=True),
        Attribute("control", show_control, store_control, control=True),
    ]
