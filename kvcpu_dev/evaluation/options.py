"""What every run of kvcpu-eval shares: its own module, so that the
policies and the device model's runtime adapter both read it without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MiB = 2**20


@dataclass
class Options:
    """What every run shares: the size of one trace block, and the
    adapter's parameters for the hepc policies (see runtime.py)."""

    block_bytes: int = 64 * MiB  # one 512-token block of Llama-3-8B fp16
    hepc: dict[str, Any] = field(default_factory=dict)  # overrides of runtime.AdapterConfig's fields
