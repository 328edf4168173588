"""The device for containers through CDI, the Container Device Interface:
``kvcpu-dev --mock --cdi`` writes a spec naming the device
``kvcpu.dev/device=NAME`` into /var/run/cdi (``--cdi-dir``), and the
runtimes that read CDI (podman 4.1+, Docker 25+ with its CDI feature,
containerd 1.7+, CRI-O, Kubernetes device plugins returning CDI names)
give a container ``/dev/NAME`` with ``--device kvcpu.dev/device=NAME``.

One spec per device, ``kvcpu.dev-NAME.json``, cdiVersion 0.5.0 (the
oldest with a device node's ``hostPath``; podman 4.3 reads 0.3.0-0.5.0):

- CUSE: a ``deviceNodes`` entry, the character device the kernel made
  (type, major and minor from it; the runtime adds the cgroup rule);
- FUSE: the device file is a regular file in a FUSE mount, not a node, so
  a bind ``mounts`` entry puts it at /dev/NAME in the container.  The bind
  holds the mount the daemon has now: a container started before a restart
  of the daemon gets ENOTCONN and must be restarted.

Both set ``KVCPU_DEVICE=/dev/NAME`` (kvctl and the client read it).  Only
the node goes in: the attribute files stay on the host (``record`` makes
the root daemon write where it is told, which a container must not).

Written atomically (a temporary name no runtime reads, renamed), 0644, in
a directory checked as the run directory is (root's, writable by nobody
else); removed on stop (by the privileged helper when the daemon dropped
root), and, after a kill -9, by the next start or ``--stop``: only a spec
for this name whose node is this device's (its host path) is ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import stat
from typing import Any

from ..errors import StartError
from ..paths import DEFAULT_CDI_DIR, cdi_spec_name
from ..safe_paths import check_own_file, secure_dir
from .options import Options

CDI_VERSION = "0.5.0"
VENDOR_CLASS = "kvcpu.dev/device"
SPEC_MODE = 0o644
#: CDI 0.5's device names: letters, digits, '-' and '_', starting and
#: ending with a letter or digit (dots only from 0.6, which podman 4.3
#: does not read).
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?")


def qualified_name(name: str) -> str:
    """What ``--device`` takes: ``kvcpu.dev/device=NAME``."""
    return f"{VENDOR_CLASS}={name}"


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise StartError(f"--cdi: {name!r} is not a CDI device name (letters, digits, '-' and '_', "
                         "starting and ending with a letter or digit); choose another --name")


def container_node(opts: Options) -> str:
    return f"/dev/{opts.name}"


def spec(opts: Options, transport: str, rdev: int | None = None) -> dict[str, Any]:
    """The spec for this device (``rdev``: the CUSE node's device number)."""
    node = container_node(opts)
    edits: dict[str, Any] = {"env": [f"KVCPU_DEVICE={node}"]}
    if transport == "cuse":
        entry: dict[str, Any] = {"path": node, "hostPath": str(opts.cuse_node), "type": "c",
                                 "permissions": "rw"}
        if rdev:
            entry.update(major=os.major(rdev), minor=os.minor(rdev))
        edits["deviceNodes"] = [entry]
    else:
        edits["mounts"] = [{"hostPath": str(opts.device_file), "containerPath": node, "options": ["bind"]}]
    return {"cdiVersion": CDI_VERSION, "kind": VENDOR_CLASS,
            "devices": [{"name": opts.name, "containerEdits": edits}]}


def _is_ours(opts: Options, text: str) -> bool:
    """A spec for this name whose node is this device's (FUSE: our device
    file; CUSE: the kernel's node for our name)."""
    try:
        doc = json.loads(text)
        (device,) = doc["devices"]
        edits = device["containerEdits"]
        hosts = [m["hostPath"] for m in edits.get("mounts", [])] + \
                [n.get("hostPath") for n in edits.get("deviceNodes", [])]
    except (ValueError, KeyError, TypeError):
        return False
    return (doc.get("kind") == VENDOR_CLASS and device.get("name") == opts.name
            and bool(hosts) and all(h in (str(opts.device_file), str(opts.cuse_node)) for h in hosts))


def _read(dir_fd: int, name: str, where: pathlib.Path) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StartError(f"cannot read {where / name}: {exc.strerror}") from None
    try:
        check_own_file(fd, where / name)
        return os.read(fd, 1 << 20).decode(errors="replace")
    finally:
        os.close(fd)


def _dirs(opts: Options) -> list[pathlib.Path]:
    """Where a spec of ours may be: --cdi-dir, and the default directory
    (a start without --cdi still cleans up after a killed --cdi one)."""
    return list(dict.fromkeys(d for d in (opts.cdi_dir, DEFAULT_CDI_DIR) if d is not None))


def check(opts: Options) -> None:
    """Before anything is made: the directory, if it exists, is safe to
    write in, and no other device's spec holds our name there."""
    if opts.cdi_dir is None:
        return
    fd = secure_dir(opts.cdi_dir, create=False, what="CDI directory")
    if fd is None:
        return  # made when the spec is written
    try:
        text = _read(fd, cdi_spec_name(opts.name), opts.cdi_dir)
    finally:
        os.close(fd)
    if text is not None and not _is_ours(opts, text):
        raise StartError(f"{opts.cdi_dir / cdi_spec_name(opts.name)} exists and is not this device's "
                         f"(another --run-dir or --dev-dir?); remove it, or choose another --name")


def write(opts: Options, transport: str) -> pathlib.Path:
    """The spec, in place once whole; returns its path."""
    assert opts.cdi_dir is not None
    rdev = None
    if transport == "cuse":
        st = os.stat(opts.cuse_node)
        if stat.S_ISCHR(st.st_mode):
            rdev = st.st_rdev
    data = (json.dumps(spec(opts, transport, rdev), indent=2) + "\n").encode()
    name = cdi_spec_name(opts.name)
    tmp = f".{name}.{os.getpid()}.tmp"  # not *.json: a runtime reading the directory skips it
    fd = secure_dir(opts.cdi_dir, create=True, what="CDI directory")
    assert fd is not None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, SPEC_MODE,
                      dir_fd=fd)
        try:
            os.fchmod(out, SPEC_MODE)  # whatever the umask
            os.write(out, data)
        finally:
            os.close(out)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as exc:
        raise StartError(f"cannot write the CDI spec {opts.cdi_dir / name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return opts.cdi_dir / name


def remove(opts: Options) -> list[pathlib.Path]:
    """Our spec, wherever it is (see _dirs); returns what was removed.
    Never raises: called on the way out."""
    removed = []
    name = cdi_spec_name(opts.name)
    for where in _dirs(opts):
        try:
            fd = secure_dir(where, create=False, what="CDI directory")
        except StartError:
            continue
        if fd is None:
            continue
        try:
            text = _read(fd, name, where)
            if text is not None and _is_ours(opts, text):
                os.unlink(name, dir_fd=fd)
                removed.append(where / name)
        except (OSError, StartError):
            pass
        finally:
            os.close(fd)
    return removed
