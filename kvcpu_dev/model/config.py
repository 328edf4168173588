"""The device model's parameters: defaults from the hardware collateral,
overridable from a TOML file and from command-line options.

Sizes, rates and durations accept plain numbers (bytes, bytes/s, seconds) or
strings with units ("2MiB", "80GB", "3TB/s", "20ms") so that a TOML file and
a command line read the way the collateral is written.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIER_KEYS = ("hbm", "t1", "t2", "t3")
TIER_NAMES = ("HBM", "T1", "T2", "T3")
HBM, T1, T2, T3 = range(4)

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_TIME_DIVISORS = {"": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # divide: 150/1e9 == 150e-9
_QUANTITY = re.compile(r"\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z/]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"bad {what}: {text!r}")
    return float(m.group(1).replace("_", "")), m.group(2).lower()


def parse_size(value: Any) -> int:
    """Bytes from 4096, "2MiB", "80GB" (decimal GB as the collateral writes)."""
    if isinstance(value, bool):
        raise ValueError(f"bad size: {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        number, unit = _split(str(value), "size")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"bad size unit in {value!r}")
    return int(number * _SIZE_UNITS[unit])


def parse_rate(value: Any) -> float:
    """Bytes per second from 3e12 or "3TB/s"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    number, unit = _split(str(value), "bandwidth")
    if unit.endswith("/s"):
        unit = unit[:-2]
    if unit not in _SIZE_UNITS:
        raise ValueError(f"bad bandwidth unit in {value!r}")
    return number * _SIZE_UNITS[unit]


def parse_duration(value: Any) -> float:
    """Seconds from 0.02 or "20ms"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    number, unit = _split(str(value), "duration")
    if unit not in _TIME_DIVISORS:
        raise ValueError(f"bad duration unit in {value!r}")
    return number / _TIME_DIVISORS[unit]


@dataclass(frozen=True)
class TierConfig:
    """One memory tier: capacity (bytes), bandwidth (bytes/s), latency (s)."""

    capacity: int
    bandwidth: float
    latency: float

    _PARSERS = {"capacity": parse_size, "bandwidth": parse_rate, "latency": parse_duration}


def _default_tiers() -> tuple[TierConfig, ...]:
    # The collateral's table.  T1's capacity is not documented: 256 GB of
    # LPDDR5X is our guess for one device; its local latency is used.
    return (
        TierConfig(80 * 10**9, 3e12, 1e-6),  # HBM
        TierConfig(256 * 10**9, 200e9, 150e-9),  # T1, device LPDDR5X
        TierConfig(2 * 10**12, 256e9, 40e-6),  # T2, DRAM/CXL pool
        TierConfig(16 * 10**12, 32e9, 300e-6),  # T3, NVMe
    )


@dataclass(frozen=True)
class ModelConfig:
    """Every parameter of the device model (see docs/device-model.md)."""

    entries: int = 65536  # RTBD tag-store entries
    block_size: int = 2 * 2**20  # bytes of KV cache one directory entry covers
    clock: str = "sim"  # "sim": fixed step period; "wall": monotonic time
    step_period: float = 0.020  # seconds per decode step on the sim clock
    initial_tier: int = HBM  # where a block is when the device first sees it
    hot_protect_steps: int = 4  # scans a MARK_HOT protects a block for
    r_decay_shift: int = 1  # R >>= this after every scan
    tiers: tuple[TierConfig, ...] = field(default_factory=_default_tiers)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if not 1 <= self.entries <= 2**24:
            raise ValueError(f"entries must be in 1..{2**24}, got {self.entries}")
        if self.block_size <= 0:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if self.clock not in ("sim", "wall"):
            raise ValueError(f"clock must be 'sim' or 'wall', got {self.clock!r}")
        if self.step_period <= 0:
            raise ValueError(f"step_period must be positive, got {self.step_period}")
        if self.initial_tier not in range(4):
            raise ValueError(f"initial_tier must be 0..3, got {self.initial_tier}")
        if not 0 <= self.hot_protect_steps <= 2**31:
            raise ValueError(f"hot_protect_steps out of range: {self.hot_protect_steps}")
        if not 0 <= self.r_decay_shift <= 8:
            raise ValueError(f"r_decay_shift must be 0..8, got {self.r_decay_shift}")
        if len(self.tiers) != 4:
            raise ValueError("exactly four tiers (hbm, t1, t2, t3)")
        for key, tier in zip(TIER_KEYS, self.tiers):
            if tier.capacity < 0 or tier.bandwidth <= 0 or tier.latency < 0:
                raise ValueError(f"tier {key}: capacity >= 0, bandwidth > 0, latency >= 0")

    # -- capacities in whole blocks, as the device allocates them ---------
    def capacity_blocks(self) -> list[int]:
        return [t.capacity // self.block_size for t in self.tiers]

    # -- overrides -----------------------------------------------------------
    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with overrides applied.  Keys are field names or
        ``<tier>_<field>`` (e.g. ``t1_capacity="128GB"``); ``None`` values
        are skipped so CLI options that were not given can be passed as is."""
        top: dict[str, Any] = {}
        tiers = [dataclasses.asdict(t) for t in self.tiers]
        for key, value in overrides.items():
            if value is None:
                continue
            tier_key, _, tier_field = key.partition("_")
            try:
                if tier_key in TIER_KEYS and tier_field in TierConfig._PARSERS:
                    tiers[TIER_KEYS.index(tier_key)][tier_field] = TierConfig._PARSERS[tier_field](value)
                elif key in _TOP_PARSERS:
                    top[key] = _TOP_PARSERS[key](value)
                else:
                    raise ValueError(f"unknown model option {key!r}")
            except ValueError as exc:
                if key in str(exc):
                    raise
                raise ValueError(f"{key}: {exc}") from None
        top["tiers"] = tuple(TierConfig(**t) for t in tiers)
        return dataclasses.replace(self, **top)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "ModelConfig":
        """From the TOML shape: top-level fields plus ``[tiers.<key>]`` tables."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tiers":
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: 'tiers' must be a table")
                for tier_key, table in value.items():
                    if tier_key not in TIER_KEYS or not isinstance(table, dict):
                        raise ValueError(f"{where}: unknown tier {tier_key!r} (known: {', '.join(TIER_KEYS)})")
                    for tier_field, v in table.items():
                        if tier_field not in TierConfig._PARSERS:
                            raise ValueError(f"{where}: unknown key 'tiers.{tier_key}.{tier_field}'")
                        flat[f"{tier_key}_{tier_field}"] = v
            elif key in _TOP_PARSERS:
                flat[key] = value
            else:
                raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(_TOP_PARSERS)}, tiers)")
        try:
            return cls().replace(**flat)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "ModelConfig":
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: {e}") from None
        return cls.from_dict(data, str(path))

    def to_toml(self) -> str:
        """The effective configuration, readable back by from_toml."""
        lines = [
            f"entries = {self.entries}",
            f"block_size = {self.block_size}",
            f'clock = "{self.clock}"',
            f"step_period = {self.step_period!r}",
            f"initial_tier = {self.initial_tier}",
            f"hot_protect_steps = {self.hot_protect_steps}",
            f"r_decay_shift = {self.r_decay_shift}",
        ]
        for key, tier in zip(TIER_KEYS, self.tiers):
            lines += [
                "",
                f"[tiers.{key}]",
                f"capacity = {tier.capacity}",
                f"bandwidth = {tier.bandwidth!r}",
                f"latency = {tier.latency!r}",
            ]
        return "\n".join(lines) + "\n"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        return int(value, 0)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _tier(value: Any) -> int:
    if isinstance(value, str) and value.lower() in TIER_KEYS:
        return TIER_KEYS.index(value.lower())
    return _int(value)


_TOP_PARSERS = {
    "entries": _int,
    "block_size": parse_size,
    "clock": str,
    "step_period": parse_duration,
    "initial_tier": _tier,
    "hot_protect_steps": _int,
    "r_decay_shift": _int,
}
