"""The device's madvise supervisor, as Python holds it: the C thread
(native/madvise.c, "kvcpu-madv") that answers madvise(MADV_KV_*) for
every program ``kvcpu-dev run`` started on this device.

Python only hands it listeners (daemon/madvise.py receives them from
``run``) and reads its counts; each hint is checked and given to the
driver on the C side (kv_dev_madvise), under the same lock as the node's
ioctls, and reaches the ring, the trace, the recorder, the metrics and
the model as the equivalent ioctl does.  The thread starts with the first
listener: a daemon no one runs programs on has none.
"""

from __future__ import annotations

import os
from typing import Any

from ..native._fuse import ffi, lib

#: struct kv_madv_stats, in order.
STATS_FIELDS = tuple(name for name, _ in ffi.typeof("struct kv_madv_stats").fields)


class MadviseSupervisor:
    """One device's supervisor thread, started by the first ``add``."""

    def __init__(self, device: Any, flags: int = 0):
        self._device = device  # the driver's struct kv_dev *, kept alive by its NativeDriver
        self._flags = flags
        self._sup: Any = None
        self._final: dict[str, int] = dict.fromkeys(STATS_FIELDS, 0)

    def add(self, listener: int) -> None:
        """Serve the seccomp listener ``listener`` (its fd is the
        supervisor's from now on, even when this raises OSError)."""
        if self._sup is None:
            sup = lib.kv_madv_sup_new(self._device, self._flags)
            if sup == ffi.NULL:
                err = ffi.errno
                os.close(listener)
                raise OSError(err, f"no seccomp user notification here: {os.strerror(err)}")
            res = lib.kv_madv_sup_start(sup)
            if res < 0:
                lib.kv_madv_sup_free(sup)
                os.close(listener)
                raise OSError(-res, os.strerror(-res))
            self._sup = sup
        res = lib.kv_madv_sup_add(self._sup, listener)
        if res < 0:
            raise OSError(-res, os.strerror(-res))

    @property
    def running(self) -> bool:
        return self._sup is not None

    def listeners(self) -> int:
        """Listeners open now: programs (and what they started) still running."""
        return int(lib.kv_madv_sup_listeners(self._sup)) if self._sup is not None else 0

    def stats(self) -> dict[str, int]:
        if self._sup is None:
            return dict(self._final)
        out = ffi.new("struct kv_madv_stats *")
        lib.kv_madv_sup_stats(self._sup, out)
        return {name: int(getattr(out, name)) for name in STATS_FIELDS}

    def close(self) -> None:
        """Send every held answer, stop the thread, close every listener:
        callers get ENOSYS from now on.  Before the device is freed."""
        if self._sup is not None:
            self._final = self.stats()
            lib.kv_madv_sup_free(self._sup)
            self._sup = None
