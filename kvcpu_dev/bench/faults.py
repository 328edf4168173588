"""Fault rules as text: what `kvctl fault add` sends through the `faults`
attribute and what reading it shows.  No cffi here, so kvctl can check a
rule before it reaches the daemon.

    add cmd=STEP errno=EIO count=3
    add cmd=any errno=ENODEV every=10 latency=5ms
    add cmd=PREFETCH errno=EIO probability=0.25 seed=7
    add cmd=TELEMETRY latency=200us            (no errno: the command runs, late)
    del 2
    clear

A rule without count, every or probability fires on every matching command.
"""

from __future__ import annotations

import errno as errno_mod
import math
import re
from typing import NamedTuple

from ..device import abi
from ..device.tables import FaultMode

MODES = tuple(mode.name.lower() for mode in FaultMode)

#: kvctl's command names and the header's, to ioctl numbers (0: any).
COMMANDS: dict[str, int] = {"any": 0}
for _command in abi.COMMANDS.values():
    COMMANDS[_command.short.lower()] = _command.number
COMMANDS.update(step=abi.KV_CPU_STEP_ADVANCE, hot=abi.KV_CPU_MARK_HOT,
                share=abi.KV_CPU_SHARE_PREFIX, weights=abi.KV_CPU_SET_WEIGHTS,
                telemetry=abi.KV_CPU_GET_TELEMETRY)

_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
#: A latency above this would look like a hang, which is not a fault we offer.
MAX_LATENCY_NS = 10 * 1_000_000_000
MAX_N = 2**63
#: Rule ids are the fast path's u32s.
MAX_ID = 2**32 - 1


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also passes '٣' and '³', which
    int() then reads, or raises on."""
    return text.isascii() and text.isdigit()


class Rule(NamedTuple):
    cmd: int
    errno: int  # 0: latency only
    mode: str
    n: int = 0
    probability: float = 0.0
    seed: int = 0
    latency_ns: int = 0


def command_name(number: int) -> str:
    if number == 0:
        return "any"
    command = abi.BY_NUMBER.get(number)
    return command.short if command else f"{number:#x}"


def parse_errno(text: str) -> int:
    name = text.upper()
    code = int(text) if _digits(text) else getattr(errno_mod, name, None) if name.startswith("E") else None
    if not isinstance(code, int) or not 0 <= code <= 4095:
        raise ValueError(f"unknown errno {text!r}")
    return code


def parse_id(text: str) -> int:
    """A rule id as ``del`` takes it: 1 to 2^32-1, ASCII digits."""
    if not _digits(text) or len(text) > 10 or not 0 < int(text) <= MAX_ID:
        raise ValueError(f"{text[:20]!r} is not a rule id (1 to {MAX_ID})")
    return int(text)


def parse_latency(text: str) -> int:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(ns|us|ms|s)?", text.strip(), re.ASCII)
    if not m:
        raise ValueError(f"bad latency {text!r} (say 5ms, 200us, 1s)")
    ns = float(m.group(1)) * _UNITS[m.group(2) or "ns"]
    if not math.isfinite(ns) or ns > MAX_LATENCY_NS:
        raise ValueError(f"latency {text!r} is over {MAX_LATENCY_NS // 10**9} s")
    return round(ns)


def _count(key: str, text: str) -> int:
    if not _digits(text) or len(text) > 19 or not 0 < int(text) < MAX_N:
        raise ValueError(f"{key} must be a whole number from 1, got {text!r}")
    return int(text)


def parse_rule(words: list[str]) -> Rule:
    """The words after ``add``: key=value pairs."""
    fields: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise ValueError(f"expected key=value, got {word!r}")
        if key in fields:
            raise ValueError(f"{key} given twice")
        fields[key] = value
    unknown = set(fields) - {"cmd", "errno", "count", "every", "probability", "seed", "latency"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    cmd_text = fields.get("cmd", "any").lower()
    if cmd_text not in COMMANDS:
        raise ValueError(f"unknown command {fields['cmd']!r} (one of {', '.join(sorted(COMMANDS))})")
    err = parse_errno(fields["errno"]) if "errno" in fields else 0
    latency = parse_latency(fields["latency"]) if "latency" in fields else 0
    chosen = [m for m in ("count", "every", "probability") if m in fields]
    if len(chosen) > 1:
        raise ValueError("give one of count, every, probability")
    if err == 0 and latency == 0:
        raise ValueError("a fault needs an errno, a latency, or both")
    if "seed" in fields and chosen != ["probability"]:
        raise ValueError("seed goes with probability")
    mode = chosen[0] if chosen else "always"
    rule = Rule(COMMANDS[cmd_text], err, mode, latency_ns=latency)
    if mode in ("count", "every"):
        return rule._replace(n=_count(mode, fields[mode]))
    if mode == "probability":
        text = fields["probability"]
        if not re.fullmatch(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", text, re.ASCII):
            raise ValueError(f"bad probability {text!r}")
        p = float(text)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be within 0..1, got {fields['probability']!r}")
        seed = _count("seed", fields["seed"]) if "seed" in fields else 0
        return rule._replace(probability=p, seed=seed)
    return rule


def render(rules: list[dict[str, int]], modes: dict[int, str]) -> str:
    """The `faults` attribute: one line per rule, in installation order; a
    probability rule with its seed (0: the default stream), so that what
    `kvctl fault list` shows is enough to install the same draws again."""
    lines = []
    for r in rules:
        name = errno_mod.errorcode.get(r["err"], str(r["err"])) if r["err"] else "none"
        mode = modes[r["mode"]]
        how = {"count": f"count={r['n']}", "every": f"every={r['n']}",
               "probability": f"probability={r['prob'] / 2**32:.6g} seed={r['seed']}",
               "always": "always"}[mode]
        lines.append(f"id={r['id']} cmd={command_name(r['cmd'])} errno={name} {how} "
                     f"latency_ns={r['latency_ns']} seen={r['seen']} hits={r['hits']}\n")
    return "".join(lines)
