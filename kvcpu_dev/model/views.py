"""What users see of the model: stats, the block dump, the attribute files'
text, and the parsers kvctl uses to read those files back.

Formats (all rendered only when read):
- ``model_stats``: ``key=value`` lines.
- ``tiers``, ``dma``: one record per line, space-separated ``key=value``.
- ``blocks``: a ``# column ...`` header line, then one whitespace-separated
  row per live entry in address order; ``-`` marks an empty field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .config import TIER_KEYS, TIER_NAMES
from .rtbd import NO_MOVE, REQUEST_UNKNOWN

if TYPE_CHECKING:
    from .device import DeviceModel

#: Cumulative counters, in the order model_stats prints them.
COUNTERS = (
    "steps", "scans", "scans_superseded", "scan_ns_total", "scan_ns_max",
    "hint_hot", "hint_evict", "hint_prefetch", "hint_share", "hints_zero_len",
    "hint_untracked_blocks", "blocks_allocated", "blocks_reclaimed", "alloc_spilled",
    "alloc_no_room", "dir_full", "evict_candidates_total", "evictions_issued",
    "evictions_deferred_full", "demotions_cancelled", "moves_cancelled_reclaim",
    "prefetch_issued_hint", "prefetch_issued_scan", "prefetch_already_staged",
    "prefetch_deferred_full", "prefetch_on_time", "prefetch_late",
    "prefetch_reclaimed_before_target", "ref_drops", "ref_saturated",
    "step_truncations", "unknown_reg_writes", "events_lost",
)

#: What the most recent scan saw and decided (reported as last_scan_<key>).
LAST_SCAN = (
    "step", "scan_ns", "live", "evict_candidates", "protected_ref", "protected_hot",
    "protected_prefetch", "evict_at_floor", "evict_busy", "evictions_issued",
    "evictions_deferred_full", "stage_wanted", "prefetch_issued", "prefetch_deferred_full",
)

BLOCK_COLUMNS = (
    "va", "len", "entry", "tier", "prio", "r", "f", "last_access", "ref", "prefix",
    "dirty", "hot", "target", "request", "moving", "hint_va", "hint_len",
)
_HEX_COLUMNS = {"va", "hint_va"}
_TEXT_COLUMNS = {"tier", "moving"}


# -- Python-side views ---------------------------------------------------------------
def stats(m: DeviceModel) -> dict[str, Any]:
    d, dma = m.dir, m.dma
    demoted, promoted = dma.completed_by_direction()
    down = int(np.triu(dma.bytes_moved, 1).sum())
    out: dict[str, Any] = {
        "clock": m.config.clock,
        "now_ns": m.now_ns(),
        "current_step": m.step32,
        "scan_pending": int(m.has_pending()),
        # 0 once the daemon's event ring dropped commands: from then on the
        # model has not seen everything the driver did.
        "in_sync": int(m.counts["events_lost"] == 0),
        "entries": d.size,
        "live_entries": len(d.index),
        "free_entries": len(d.free),
        "block_size": m.block_size,
    }
    out.update(m.counts)
    out["scan_ns_avg"] = m.counts["scan_ns_total"] // max(1, m.counts["scans"])
    out.update(
        evictions_completed=demoted,
        prefetches_completed=promoted,
        bytes_moved=int(dma.bytes_moved.sum()),
        bytes_down=down,
        bytes_up=int(dma.bytes_moved.sum()) - down,
    )
    for key, resident in zip(TIER_KEYS, dma.resident):
        out[f"{key}_blocks"] = resident
    out.update({f"last_scan_{k}": v for k, v in m.last_scan.items()})
    out.update(m.regs.weights.__dict__)
    out["register_truncations"] = m.regs.truncations
    out["directory_bytes"] = d.nbytes()
    out["dma_queue_bytes"] = dma.nbytes()
    return out


def tiers(m: DeviceModel) -> list[dict[str, Any]]:
    dma, bs = m.dma, m.block_size
    rows = []
    for t, (name, tc) in enumerate(zip(TIER_NAMES, m.config.tiers)):
        rows.append({
            "tier": name,
            "capacity_blocks": dma.capacity[t],
            "resident": dma.resident[t],
            "inbound": dma.inbound[t],
            "free": dma.room(t),
            "capacity_bytes": tc.capacity,
            "used_bytes": (dma.resident[t] + dma.inbound[t]) * bs,
            "bytes_in": dma.bytes_in[t],
            "bytes_out": dma.bytes_out[t],
            "bandwidth": int(tc.bandwidth),
            "latency_ns": round(tc.latency * 1e9),
        })
    return rows


def dma_state(m: DeviceModel) -> list[dict[str, Any]]:
    now = m.now_ns()
    rows = [m.dma.channel_state(c, now) for c in range(2)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                rows.append({
                    "route": f"{TIER_NAMES[src]}->{TIER_NAMES[dst]}",
                    "transfer_ns": int(m.dma.duration[src, dst]),
                    "bytes": int(m.dma.bytes_moved[src, dst]),
                })
    return rows


def _tier_code(tier: int | str) -> int:
    if isinstance(tier, str):
        names = [n.lower() for n in TIER_NAMES]
        if tier.lower() in names:
            return names.index(tier.lower())
        if tier.lower() in TIER_KEYS:
            return TIER_KEYS.index(tier.lower())
        tier = int(tier, 0)
    if tier not in range(4):
        raise ValueError(f"no tier {tier!r} (0-3 or HBM, T1, T2, T3)")
    return tier


def blocks(m: DeviceModel, tier: int | str | None = None, va_range: tuple[int, int] | None = None) -> list[dict]:
    d, bs = m.dir, m.block_size
    idx = d.live_indices()
    if tier is not None:
        idx = idx[d.tier[idx] == _tier_code(tier)]
    if va_range is not None:
        start, end = va_range
        if end <= start:
            return []
        idx = idx[(d.block[idx] >= np.uint64(start // bs)) & (d.block[idx] <= np.uint64((end - 1) // bs))]
    idx = idx[np.argsort(d.block[idx], kind="stable")]
    hot = d.hot[idx] & ((np.uint32(m.step32) - d.hot_step[idx]) < np.uint32(min(m.config.hot_protect_steps, 0xFFFFFFFF)))
    cols = {
        "va": (d.block[idx] * np.uint64(bs)).tolist(),
        "entry": idx.tolist(),
        "tier": [TIER_NAMES[t] for t in d.tier[idx].tolist()],
        "prio": d.priority[idx].tolist(),
        "r": d.r[idx].tolist(),
        "f": d.f[idx].tolist(),
        "last_access": d.last_access[idx].tolist(),
        "ref": d.ref[idx].tolist(),
        "prefix": d.prefix[idx].astype(int).tolist(),
        "dirty": d.dirty[idx].astype(int).tolist(),
        "hot": hot.astype(int).tolist(),
        "target": [t if a else None for t, a in zip(d.target[idx].tolist(), d.armed[idx].tolist())],
        "request": [None if r == REQUEST_UNKNOWN else r for r in d.request_id[idx].tolist()],
        "moving": [None if x == NO_MOVE else TIER_NAMES[x] for x in d.mv_dst[idx].tolist()],
        "hint_va": d.hint_va[idx].tolist(),
        "hint_len": d.hint_len[idx].tolist(),
    }
    cols["len"] = [bs] * len(idx)
    return [dict(zip(BLOCK_COLUMNS, row)) for row in zip(*(cols[c] for c in BLOCK_COLUMNS))]


# -- attribute text ---------------------------------------------------------------------
def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in _HEX_COLUMNS:
        return f"{value:#x}"
    return str(value)


def render_stats(m: DeviceModel) -> str:
    return "".join(f"{k}={v}\n" for k, v in stats(m).items())


def _render_records(rows: list[dict]) -> str:
    return "".join(" ".join(f"{k}={v}" for k, v in row.items()) + "\n" for row in rows)


def render_tiers(m: DeviceModel) -> str:
    return _render_records(tiers(m))


def render_dma(m: DeviceModel) -> str:
    return _render_records(dma_state(m))


def render_block_rows(rows: list[dict]) -> str:
    lines = ["# " + " ".join(BLOCK_COLUMNS)]
    lines += [" ".join(_fmt(c, row[c]) for c in BLOCK_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def render_blocks(m: DeviceModel) -> str:
    return render_block_rows(blocks(m))


# -- parsers (kvctl reads the files back) ----------------------------------------------------
def _value(text: str) -> Any:
    try:
        return int(text, 0) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        return text


def parse_stats(text: str) -> dict[str, Any]:
    out = {}
    for line in text.splitlines():
        if line.strip():
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"not a key=value line: {line!r}")
            out[key] = _value(value)
    return out


def parse_records(text: str) -> list[dict[str, Any]]:
    return [parse_stats("\n".join(line.split())) for line in text.splitlines() if line.strip()]


def parse_blocks(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("blocks: missing '# column ...' header")
    columns = lines[0][2:].split()
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != len(columns):
            raise ValueError(f"blocks: {len(fields)} fields, header has {len(columns)}")
        rows.append({
            c: None if f == "-" else (f if c in _TEXT_COLUMNS else _value(f))
            for c, f in zip(columns, fields)
        })
    return rows
