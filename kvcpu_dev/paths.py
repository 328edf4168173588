"""Every path a device uses, named once.

For a device named N (``--run-dir`` and ``--dev-dir`` configurable):

  RUN_DIR/N/            FUSE mount (type fuse.kvcpu, source kvcpu-N): the
                        driver's attribute files and the model's
  RUN_DIR/N/device      FUSE transport: the file answering ioctls, a mount
                        of its own (type fuse.kvcpu-device, source kvcpu-N)
  RUN_DIR/N.lock        flock held for the daemon's life (0600)
  RUN_DIR/N.pid         the daemon's pid (0644)
  RUN_DIR/N.log         the background daemon's log (0644)
  DEV_DIR/N             the node: FUSE, a symlink to RUN_DIR/N/device;
                        CUSE, the character device /dev/N (or, with another
                        --dev-dir, a symlink to it)
  DEV_DIR/.N.PID        the node's link while it is made (renamed into place)

No cffi and no numpy here: the client imports this module.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import DeviceModel

DEFAULT_RUN_DIR = pathlib.Path("/run/kvcpu")
DEFAULT_DEV_DIR = pathlib.Path("/dev")
CUSE_PATH = pathlib.Path("/dev/cuse")
#: Where the kernel creates a CUSE device, whatever --dev-dir says.
KERNEL_DEV_DIR = pathlib.Path("/dev")
#: The FUSE transport's ioctl file inside the attribute mount (fs.py serves it).
DEVICE_FILE = "device"
#: How a device's attribute mount shows in the mount table.
FS_TYPE = "fuse.kvcpu"
#: The FUSE transport's device file has a mount of its own on top of
#: RUN_DIR/N/device (the fast path's session): same source, this type.
DEVICE_FS_TYPE = "fuse.kvcpu-device"
#: The FUSE control file system: one directory per connection.
FUSECTL_DIR = pathlib.Path("/sys/fs/fuse/connections")


def mount_source(name: str) -> str:
    """The attribute mount's source in the mount table: how clients and the
    clean-up find a device's mount whatever --run-dir was."""
    return f"kvcpu-{name}"


def temp_link_name(name: str, pid: int) -> str:
    """The node's link while it is made, before the rename into place."""
    return f".{name}.{pid}"


#: The fast path's event ring: events held between drains; at 224 bytes
#: each, 16384 is 3.5 MiB.  (Here, not in fastpath.py, so that the options
#: need no cffi.)
RING_EVENTS = 16384


@dataclass
class Options:
    name: str = "kvcpu0"
    transport: str = "auto"  # auto | cuse | fuse
    run_dir: pathlib.Path = DEFAULT_RUN_DIR
    dev_dir: pathlib.Path = DEFAULT_DEV_DIR
    cuse_path: pathlib.Path = CUSE_PATH
    mode: int = 0o600
    gid: int = 0
    trace: bool = False
    poll_us: int = 0  # --poll-us: spin this long after a reply before blocking
    ring_events: int = RING_EVENTS
    model: DeviceModel | None = None  # None: registers only (--no-model)
    #: Builds ``model`` in the daemon's process, first thing in serve():
    #: the command that only forks a daemon never loads numpy.
    make_model: Callable[[], DeviceModel] | None = None
    # The bench (kvcpu_dev/bench):
    record: pathlib.Path | None = None  # --record FILE: record from the start
    metrics: str | None = None  # --metrics HOST:PORT: Prometheus text at /metrics
    # The daemon's own (the Server does not read these):
    runas: str | None = None  # drop to this user once the node is published
    seccomp: bool = False
    request_timeout: float | None = None  # seconds; None: wait forever
    log_path: pathlib.Path | None = None  # background log; default RUN_DIR/N.log

    @property
    def attr_dir(self) -> pathlib.Path:
        return self.run_dir / self.name

    @property
    def node(self) -> pathlib.Path:
        return self.dev_dir / self.name

    @property
    def cuse_node(self) -> pathlib.Path:
        """Where the kernel puts a CUSE device, whatever --dev-dir says."""
        return KERNEL_DEV_DIR / self.name

    @property
    def device_file(self) -> pathlib.Path:
        """The FUSE transport's ioctl file, the node's link target."""
        return self.attr_dir / DEVICE_FILE

    @property
    def lock_name(self) -> str:
        return f"{self.name}.lock"

    @property
    def pid_name(self) -> str:
        return f"{self.name}.pid"

    @property
    def lock_file(self) -> pathlib.Path:
        return self.run_dir / self.lock_name

    @property
    def pid_file(self) -> pathlib.Path:
        return self.run_dir / self.pid_name

    @property
    def log_file(self) -> pathlib.Path:
        return self.log_path or self.run_dir / f"{self.name}.log"

    @property
    def source(self) -> str:
        return mount_source(self.name)

    def temp_link(self, pid: int) -> pathlib.Path:
        return self.dev_dir / temp_link_name(self.name, pid)

    def link_targets(self) -> tuple[pathlib.Path, ...]:
        """What a node link of ours points to."""
        return (self.device_file, self.cuse_node)

    def resolved_transport(self) -> str:
        if self.transport != "auto":
            return self.transport
        return "cuse" if self.cuse_path.exists() else "fuse"
