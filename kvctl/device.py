"""One call on the device node, failing with the reference tool's messages,
and a second line saying what to do when the node is not there."""

from __future__ import annotations

import errno
import os
import pathlib
import shlex
from collections.abc import Callable

from kvcpu_dev import paths
from kvcpu_dev.client import KvCpu

from .errors import Failure


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno is not None else str(exc)


def _daemon_args(path: str) -> str:
    """The kvcpu-dev options that make ``path`` its node (and, for a FUSE
    node's link, name its run directory)."""
    node = pathlib.Path(path)
    words = []
    if node.name != "kvcpu0":
        words += ["--name", node.name]
    if node.parent != paths.DEFAULT_DEV_DIR:
        words += ["--dev-dir", str(node.parent)]
    try:
        target = pathlib.Path(os.readlink(path))
    except OSError:
        target = None
    if target is not None and target.name == paths.DEVICE_FILE and target.parent.name == node.name \
            and target.parent.parent != paths.DEFAULT_RUN_DIR:
        words += ["--run-dir", str(target.parent.parent)]
    return shlex.join(words)


def open_hint(path: str, err: int | None) -> str | None:
    """What to do about a node that could not be opened, as one line (the
    reference tool's ``open PATH: <strerror>`` alone leaves a newcomer
    guessing), or None when there is nothing useful to say."""
    args = _daemon_args(path)
    with_args = f" {args}" if args else ""
    if err == errno.ENOENT:
        if os.path.islink(path):
            return (f"kvctl: {path} is a link to {os.readlink(path)}, which is gone: its daemon ended "
                    f"uncleanly; 'kvcpu-dev --stop{with_args}' removes it")
        return (f"kvctl: no device there; start one with 'kvcpu-dev --mock{with_args}' (as root), "
                "or point --device or $KVCPU_DEVICE at a running one")
    if err == errno.ENOTCONN:
        return (f"kvctl: the daemon behind {path} is gone (killed?); 'kvcpu-dev --stop{with_args}' "
                "cleans up, then start it again")
    if err == errno.ENODEV:
        return "kvctl: the device is unplugged ('kvctl replug' brings it back)"
    if err in (errno.EACCES, errno.EPERM):
        return ("kvctl: the node is root's (0600 by default); run as root, or start kvcpu-dev with "
                "--mode 0660 --group GROUP for a group's members")
    return None


def open_failure(path: str, exc: OSError) -> Failure:
    """The reference's ``open PATH: <strerror>``, and the hint after it."""
    hint = open_hint(path, exc.errno)
    return Failure(f"open {path}: {_strerror(exc)}" + (f"\n{hint}" if hint else ""))


def attr_hint(device: str, attr: pathlib.Path, err: int | None) -> str:
    """After a failed read or write of an attribute file: the hint for its
    device when the attribute directory is not there (no daemon), as a
    second line, else nothing."""
    if device and err in (errno.ENOENT, errno.ENOTCONN) and not os.path.isdir(attr.parent):
        hint = open_hint(device, errno.ENOTCONN if os.path.lexists(attr.parent) else errno.ENOENT)
        return f"\n{hint}" if hint else ""
    return ""


def call(path: str, label: str, action: Callable[[KvCpu], object]) -> None:
    """Open the node and run ``action`` on it: a failed open is ``open PATH:
    <strerror>`` (with a hint on the next line) and a failed ioctl ``ioctl
    LABEL: <strerror>``."""
    try:
        dev = KvCpu(path)
    except OSError as exc:
        raise open_failure(path, exc) from None
    with dev:
        try:
            action(dev)
        except OSError as exc:
            raise Failure(f"ioctl {label}: {_strerror(exc)}") from None
