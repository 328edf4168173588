"""Every path a device uses, named once.

For a device named N (``--run-dir`` and ``--dev-dir`` configurable):

  RUN_DIR/N/            FUSE mount (type fuse.kvcpu, source kvcpu-N): the
                        driver's attribute files and the model's
  RUN_DIR/N/device      FUSE transport: the file answering ioctls, a mount
                        of its own (type fuse.kvcpu-device, source kvcpu-N)
  RUN_DIR/N.lock        flock held for the daemon's life (0600)
  RUN_DIR/N.pid         the daemon's pid (0644)
  RUN_DIR/N.log         the background daemon's log (0644)
  RUN_DIR/N.madvise     where ``kvcpu-dev run`` hands over madvise listeners
                        (a unix socket with the node's mode and group)
  DEV_DIR/N             the node: FUSE, a symlink to RUN_DIR/N/device;
                        CUSE, the character device /dev/N (or, with another
                        --dev-dir, a symlink to it)
  DEV_DIR/.N.PID        the node's link while it is made (renamed into place)
  CDI_DIR/kvcpu.dev-N.json   with --cdi: the CDI spec naming the node for
                        container runtimes (CDI_DIR: /var/run/cdi, --cdi-dir)

No cffi and no numpy here: the client imports this module.  The options
of one running device, which name these paths, are daemon/options.py.
"""

from __future__ import annotations

import pathlib

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
#: Where container runtimes look for CDI specs written at run time (the
#: CDI default beside the static /etc/cdi); --cdi writes there.
DEFAULT_CDI_DIR = pathlib.Path("/var/run/cdi")
#: The FUSE control file system: one directory per connection.
FUSECTL_DIR = pathlib.Path("/sys/fs/fuse/connections")


def mount_source(name: str) -> str:
    """The attribute mount's source in the mount table: how clients and the
    clean-up find a device's mount whatever --run-dir was."""
    return f"kvcpu-{name}"


def cdi_spec_name(name: str) -> str:
    """The CDI spec of device ``name`` (vendor kvcpu.dev, one file per device)."""
    return f"kvcpu.dev-{name}.json"


def madvise_socket_name(name: str) -> str:
    """``kvcpu-dev run``'s socket in the run directory, beside N.pid."""
    return f"{name}.madvise"


def temp_link_name(name: str, pid: int) -> str:
    """The node's link while it is made, before the rename into place."""
    return f".{name}.{pid}"


#: The fast path's event ring, the device's command queue: events held
#: between drains (240 bytes each).  A full ring is what a model view
#: must catch up on before it answers (~8-10 us an event under a mixed
#: flood: ~10 ms), and when it is full a request waits for room
#: (lossless).  4,096 made views under two flooding clients take up to
#: 166 ms.  (Here, not in driver/, so that the options need no cffi.)
RING_EVENTS = 1024
