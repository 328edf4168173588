"""kvcpu-dev: a userspace KV-CPU device (/dev/kvcpu0) for machines without
the hardware or the kernel driver."""

__version__ = "0.1.0"
