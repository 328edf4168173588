"""The device model's parameters: defaults from the hardware collateral,
overridable from a TOML file and from command-line options.

Sizes, rates and durations accept plain numbers (bytes, bytes/s, seconds) or
strings with units ("2MiB", "80GB", "3TB/s", "20ms") so that a TOML file and
a command line read the way the collateral is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..device.model_text import TIER_KEYS, tier_by_name
from ..device.model_text import TIER_NAMES as TIER_NAMES  # the model's modules take it from here

HBM, T1, T2, T3 = range(4)

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_TIME_DIVISORS = {"": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # divide: 150/1e9 == 150e-9
_QUANTITY = re.compile(r"\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z/]*)\s*$")


#: The longest number a value may spell (a 5000-digit size is a typo, and
#: int() of it raises an error of its own).
_MAX_DIGITS = 40

#: The range of every parameter, inclusive (docs/device-model.md lists them).
#: Tier fields apply to each tier's ``<tier>_<field>``.
LIMITS: dict[str, tuple[float, float]] = {
    "entries": (1, 2**24),
    "block_size": (1, 2**40),  # 1 TiB
    "step_period": (1e-9, 3600.0),  # 1 ns .. 1 h
    "initial_tier": (0, 3),
    "hot_protect_steps": (0, 2**31),
    "r_decay_shift": (0, 8),
    "capacity": (0, 2**60),  # 1 EiB
    "bandwidth": (1.0, 1e16),  # bytes/s: 1 B/s .. 10 PB/s
    "latency": (0.0, 3600.0),
}


def _plain_number(value: Any, what: str) -> float:
    """A TOML or Python number, refused if it is a bool or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"bad {what}: {value!r}")
    if isinstance(value, int) and abs(value) >= 10**_MAX_DIGITS:
        raise ValueError(f"{what} out of range: {value}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not a finite number: {value!r}")
    return number


def _split(text: str, what: str) -> tuple[float, str]:
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"bad {what}: {text!r}")
    digits = m.group(1).replace("_", "")
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"{what} out of range: {text[:20]}... ({len(digits)} digits)")
    number = float(digits)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not a finite number: {text!r}")
    return number, m.group(2).lower()


def _finite(number: float, value: Any, what: str) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{what} out of range: {value!r}")
    return number


def parse_size(value: Any) -> int:
    """Bytes from 4096, "2MiB", "80GB" (decimal GB as the collateral writes)."""
    if isinstance(value, (int, float, bool)):
        number, unit = _plain_number(value, "size"), ""
    elif isinstance(value, str):
        number, unit = _split(value, "size")
    else:
        raise ValueError(f"bad size: {value!r}")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"bad size unit in {value!r}")
    return int(_finite(number * _SIZE_UNITS[unit], value, "size"))


def parse_rate(value: Any) -> float:
    """Bytes per second from 3e12 or "3TB/s"."""
    if isinstance(value, (int, float, bool)):
        return _plain_number(value, "bandwidth")
    if not isinstance(value, str):
        raise ValueError(f"bad bandwidth: {value!r}")
    number, unit = _split(value, "bandwidth")
    if unit.endswith("/s"):
        unit = unit[:-2]
    if unit not in _SIZE_UNITS:
        raise ValueError(f"bad bandwidth unit in {value!r}")
    return _finite(number * _SIZE_UNITS[unit], value, "bandwidth")


def parse_duration(value: Any) -> float:
    """Seconds from 0.02 or "20ms"."""
    if isinstance(value, (int, float, bool)):
        return _plain_number(value, "duration")
    if not isinstance(value, str):
        raise ValueError(f"bad duration: {value!r}")
    number, unit = _split(value, "duration")
    if unit not in _TIME_DIVISORS:
        raise ValueError(f"bad duration unit in {value!r}")
    return number / _TIME_DIVISORS[unit]


def _check_range(key: str, field_name: str, value: float) -> None:
    low, high = LIMITS[field_name]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be in {_fmt(low)}..{_fmt(high)}, got {value!r}")


def _fmt(limit: float) -> str:
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


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
        """Every value in its documented range (LIMITS); the message names
        the key as --set spells it."""
        if self.clock not in ("sim", "wall"):
            raise ValueError(f"clock must be 'sim' or 'wall', got {self.clock!r}")
        if self.block_size <= 0:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if self.initial_tier not in range(4):
            raise ValueError(f"initial_tier must be 0..3, got {self.initial_tier}")
        for name in _TOP_PARSERS:
            if name in LIMITS:
                _check_range(name, name, getattr(self, name))
        if len(self.tiers) != 4:
            raise ValueError("exactly four tiers (hbm, t1, t2, t3)")
        for key, tier in zip(TIER_KEYS, self.tiers):
            for name in ("capacity", "bandwidth", "latency"):
                _check_range(f"{key}_{name}", name, getattr(tier, name))

    # -- capacities in whole blocks, as the device allocates them ---------
    def capacity_blocks(self) -> list[int]:
        return [t.capacity // self.block_size for t in self.tiers]

    # -- overrides -----------------------------------------------------------
    def replace(self, **overrides: Any) -> ModelConfig:
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
            except (ValueError, TypeError, OverflowError) as exc:
                if isinstance(exc, ValueError) and key in str(exc):
                    raise
                raise ValueError(f"{key}: {exc}") from None
        top["tiers"] = tuple(TierConfig(**t) for t in tiers)
        return dataclasses.replace(self, **top)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> ModelConfig:
        """From the TOML shape: top-level fields plus ``[tiers.<key>]`` tables."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tiers":
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: 'tiers' must be a table")
                for tier_key, table in value.items():
                    if tier_key not in TIER_KEYS:
                        raise ValueError(f"{where}: unknown tier {tier_key!r} (known: {', '.join(TIER_KEYS)})")
                    if not isinstance(table, dict):
                        raise ValueError(f"{where}: 'tiers.{tier_key}' must be a table")
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
            message = str(e)
            for key in TIER_KEYS:  # name tier keys as the file spells them
                message = re.sub(rf"\b{key}_(capacity|bandwidth|latency)\b", rf"tiers.{key}.\1", message)
            raise ValueError(f"{where}: {message}") from None

    @classmethod
    def from_toml(cls, path: str | Path, defaults: dict[str, Any] | None = None) -> ModelConfig:
        """From a TOML file; ``defaults`` fill what the file leaves out (the
        daemon's clock = "wall").  The one way a configuration file is read."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except ValueError as e:  # TOMLDecodeError, a bad encoding, or an integer too long to convert
            raise ValueError(f"{path}: {e}") from None
        return cls.from_dict({**(defaults or {}), **data}, str(path))

    def to_toml(self) -> str:
        """The effective configuration, readable back by from_toml."""
        lines = [f"{name} = {_toml_value(getattr(self, name))}" for name in _TOP_PARSERS]
        for key, tier in zip(TIER_KEYS, self.tiers):
            lines += [
                "",
                f"[tiers.{key}]",
                f"capacity = {tier.capacity}",
                f"bandwidth = {tier.bandwidth!r}",
                f"latency = {tier.latency!r}",
            ]
        return "\n".join(lines) + "\n"


def _toml_value(value: int | float | str) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _int(value: Any) -> int:
    """An integer from 42, 42.0, "42", "0x2a"; anything else is refused."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if len(text) > _MAX_DIGITS:
            raise ValueError(f"out of range: {value[:20]}... ({len(text)} characters)")
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    if abs(value) >= 10**_MAX_DIGITS:
        raise ValueError(f"out of range: {value!r}")
    return int(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _tier(value: Any) -> int:
    named = tier_by_name(value) if isinstance(value, str) else None
    return named if named is not None else _int(value)


_TOP_PARSERS = {
    "entries": _int,
    "block_size": parse_size,
    "clock": _str,
    "step_period": parse_duration,
    "initial_tier": _tier,
    "hot_protect_steps": _int,
    "r_decay_shift": _int,
}

#: The top-level fields are the parsers' keys (validation and to_toml walk
#: them), the tiers apart.
assert [f.name for f in dataclasses.fields(ModelConfig)] == [*_TOP_PARSERS, "tiers"], \
    "ModelConfig's fields and _TOP_PARSERS differ"
