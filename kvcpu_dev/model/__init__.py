"""The KV-CPU device behind BAR0: block directory (RTBD), eviction policy
controller (HEPC), DMA engine and memory tiers.  See docs/device-model.md."""

from .config import ModelConfig, TierConfig
from .device import DeviceModel, InvariantError

__all__ = ["DeviceModel", "InvariantError", "ModelConfig", "TierConfig"]
