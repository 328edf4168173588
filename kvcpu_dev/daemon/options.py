"""One device's options: its name, transport, modes and the paths it
uses (named in paths.py), the model and the bench's settings.  No cffi and
no numpy here: the command line builds these before it forks."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..paths import (
    CUSE_PATH,
    DEFAULT_DEV_DIR,
    DEFAULT_RUN_DIR,
    DEVICE_FILE,
    KERNEL_DEV_DIR,
    RING_EVENTS,
    cdi_spec_name,
    madvise_socket_name,
    mount_source,
    temp_link_name,
)

if TYPE_CHECKING:
    from ..model import DeviceModel


@dataclass
class Options:
    name: str = "kvcpu0"
    transport: str = "auto"  # auto | cuse | fuse | uring
    run_dir: pathlib.Path = DEFAULT_RUN_DIR
    dev_dir: pathlib.Path = DEFAULT_DEV_DIR
    cuse_path: pathlib.Path = CUSE_PATH
    mode: int = 0o600
    gid: int = 0
    #: --control-group: the node's group may write the bench's controls
    #: (record, faults, control); otherwise only the owner (root) may.
    control_group: bool = False
    trace: bool = False
    poll_us: int = 0  # --poll-us: spin this long after a reply before blocking
    ring_events: int = RING_EVENTS
    #: --lossy: a full ring drops events (counted) instead of making the
    #: request wait for room.
    lossy: bool = False
    #: Builds the device model in the daemon's process, first thing in
    #: serve(): the command that only forks a daemon never loads numpy.
    #: None: registers only (--no-model).
    make_model: Callable[[], DeviceModel] | None = None
    # The bench (kvcpu_dev/bench):
    record: pathlib.Path | None = None  # --record FILE: record from the start
    metrics: str | None = None  # --metrics HOST:PORT: Prometheus text at /metrics
    # The daemon's own (the Server does not read these):
    runas: str | None = None  # drop to this user once the node is published
    seccomp: bool = False
    request_timeout: float | None = None  # seconds; None: wait forever
    log_path: pathlib.Path | None = None  # background log; default RUN_DIR/N.log
    cdi_dir: pathlib.Path | None = None  # --cdi / --cdi-dir: write the CDI spec there; None: no spec

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
    def madvise_name(self) -> str:
        """The socket ``kvcpu-dev run`` hands madvise listeners over (daemon/madvise.py)."""
        return madvise_socket_name(self.name)

    @property
    def madvise_socket(self) -> pathlib.Path:
        return self.run_dir / self.madvise_name

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
    def cdi_spec(self) -> pathlib.Path | None:
        return self.cdi_dir / cdi_spec_name(self.name) if self.cdi_dir is not None else None

    @property
    def source(self) -> str:
        return mount_source(self.name)

    def temp_link(self, pid: int) -> pathlib.Path:
        return self.dev_dir / temp_link_name(self.name, pid)

    def link_targets(self) -> tuple[pathlib.Path, ...]:
        """What a node link of ours points to."""
        return (self.device_file, self.cuse_node)

    def resolved_transport(self) -> str:
        """auto: CUSE where the kernel has it, else the device file over
        FUSE io_uring if it is already switched on, else over /dev/fuse."""
        if self.transport != "auto":
            return self.transport
        if self.cuse_path.exists():
            return "cuse"
        from ..transport import uring_param  # no cffi: a file read

        return "uring" if uring_param.enabled() else "fuse"


def is_device_file(transport: str) -> bool:
    """The node is a link to a FUSE-mounted file (classic or io_uring), not
    a character device."""
    return transport != "cuse"
