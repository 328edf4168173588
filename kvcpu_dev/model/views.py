"""What users see of the model: stats, tiers, DMA state and the block dump
as Python values, and the attribute files' text of them.  The formats, their
rendering and their parsers are numpy-free, in kvcpu_dev/device/model_text.py."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..device import model_text as text
from ..device.model_text import BLOCK_COLUMNS, TIER_KEYS, TIER_NAMES, tier_index
from ..device.regs import U32
from ..device.sysfs import Pieces
from . import rows
from .config import ModelConfig
from .dma import DmaEngine
from .hepc import Registers
from .rtbd import NO_MOVE, REQUEST_UNKNOWN, Directory


class ModelState(Protocol):
    """What the views read of the model (device.ModelState): its parts and
    counters, never its behaviour, so the views need not import it."""

    config: ModelConfig
    dir: Directory
    dma: DmaEngine
    regs: Registers
    @property
    def counts(self) -> dict[str, int]: ...
    last_scan: dict[str, int]
    step32: int
    block_size: int
    window: int

    def now_ns(self) -> int: ...
    def has_pending(self) -> bool: ...


# -- Python-side views ---------------------------------------------------------------
def stats(m: ModelState) -> dict[str, Any]:
    d, dma = m.dir, m.dma
    demoted, promoted = dma.completed_by_direction()
    down = int(np.triu(dma.bytes_moved, 1).sum())
    out: dict[str, Any] = {
        "clock": m.config.clock,
        "now_ns": m.now_ns(),
        "current_step": m.step32,
        "prefetch_window": m.window,  # PREFETCH_WINDOW (madvise PREFETCH's W); 0: none
        "scan_pending": int(m.has_pending()),
        # 0 once the daemon's event ring dropped commands: from then on the
        # model has not seen everything the driver did.
        "in_sync": int(m.counts["events_lost"] == 0),
        "entries": d.size,
        "live_entries": len(d.index),
        "free_entries": d.free_entries(),
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
    for key, resident in zip(TIER_KEYS, dma.resident.tolist()):
        out[f"{key}_blocks"] = resident
    out.update({f"last_scan_{k}": v for k, v in m.last_scan.items()})
    out.update(m.regs.weights.__dict__)
    out["register_truncations"] = m.regs.truncations
    out["directory_bytes"] = d.nbytes()
    out["dma_queue_bytes"] = dma.nbytes()
    return out


def tiers(m: ModelState) -> list[dict[str, Any]]:
    dma, bs = m.dma, m.block_size
    rows = []
    for t, (name, tc) in enumerate(zip(TIER_NAMES, m.config.tiers)):
        rows.append({
            "tier": name,
            "capacity_blocks": int(dma.capacity[t]),
            "resident": int(dma.resident[t]),
            "inbound": int(dma.inbound[t]),
            "free": dma.room(t),
            "capacity_bytes": tc.capacity,
            "used_bytes": int(dma.resident[t] + dma.inbound[t]) * bs,
            "bytes_in": int(dma.bytes_in[t]),
            "bytes_out": int(dma.bytes_out[t]),
            "bandwidth": int(tc.bandwidth),
            "latency_ns": round(tc.latency * 1e9),
        })
    return rows


def dma_state(m: ModelState) -> list[dict[str, Any]]:
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


def block_arrays(m: ModelState, tier: int | str | None = None,
                 va_range: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """A snapshot of the live entries in address order, an array per field
    (copies: the model may move on while they are formatted); ``va_range``
    is [start, end)."""
    d, bs = m.dir, m.block_size
    idx = d.live_indices()
    if tier is not None:
        idx = idx[d.tier[idx] == tier_index(tier)]
    if va_range is not None:
        start, end = va_range
        if end <= start:
            idx = idx[:0]
        else:
            idx = idx[(d.block[idx] >= np.uint64(start // bs)) & (d.block[idx] <= np.uint64((end - 1) // bs))]
    idx = idx[address_order(d.block[idx])]
    return {
        "va": d.block[idx] * np.uint64(bs), "entry": idx, "tier": d.tier[idx], "prio": d.priority[idx],
        "r": d.r[idx], "f": d.f[idx], "last_access": d.last_access[idx], "ref": d.ref[idx],
        "prefix": d.prefix[idx], "dirty": d.dirty[idx],
        "hot": d.hot[idx] & ((np.uint32(m.step32) - d.hot_step[idx]) < np.uint32(min(m.config.hot_protect_steps, U32))),
        "target": d.target[idx], "armed": d.armed[idx], "request": d.request_id[idx], "moving": d.mv_dst[idx],
        "hint_va": d.hint_va[idx], "hint_len": d.hint_len[idx],
    }


#: A directory's blocks spanning less than this many times their number
#: are put in order by a scatter over their span rather than a sort: its
#: int32 slots then take at most 16 bytes a block, as argsort's own do.
DENSE_SPAN = 4


def address_order(blocks: np.ndarray) -> np.ndarray:
    """The permutation putting ``blocks`` in ascending order, ties (none in
    a directory) in their own order.  A KV pool's blocks are mostly a dense
    range: a scatter over it orders 100,000 in ~1 ms where a sort takes 5-8
    ms of the thread every reader waits for; sparse ones are sorted."""
    n = len(blocks)
    if n == 0 or n >= 2**31:
        return np.argsort(blocks, kind="stable")
    low = blocks.min()
    span = int(blocks.max()) - int(low) + 1
    if span > DENSE_SPAN * n:
        return np.argsort(blocks, kind="stable")
    slots = np.full(span, -1, np.int32)
    slots[blocks - low] = np.arange(n, dtype=np.int32)  # of two equal blocks, one is lost ...
    order = slots[slots >= 0]
    return order if len(order) == n else np.argsort(blocks, kind="stable")  # ... and they are sorted


def column_lists(arrays: dict[str, np.ndarray], block_size: int,
                 start: int = 0, end: int | None = None) -> dict[str, list[Any]]:
    """Rows start..end of a block_arrays snapshot, a list per column
    (BLOCK_COLUMNS; None for an empty field)."""
    a = {k: v[start:end] for k, v in arrays.items()}
    n = len(a["va"])
    return {
        "va": a["va"].tolist(),
        "len": [block_size] * n,
        "entry": a["entry"].tolist(),
        "tier": [TIER_NAMES[t] for t in a["tier"].tolist()],
        "prio": a["prio"].tolist(),
        "r": a["r"].tolist(),
        "f": a["f"].tolist(),
        "last_access": a["last_access"].tolist(),
        "ref": a["ref"].tolist(),
        "prefix": a["prefix"].astype(int).tolist(),
        "dirty": a["dirty"].astype(int).tolist(),
        "hot": a["hot"].astype(int).tolist(),
        "target": [t if armed else None for t, armed in zip(a["target"].tolist(), a["armed"].tolist())],
        "request": [None if r == REQUEST_UNKNOWN else r for r in a["request"].tolist()],
        "moving": [None if x == NO_MOVE else TIER_NAMES[x] for x in a["moving"].tolist()],
        "hint_va": a["hint_va"].tolist(),
        "hint_len": a["hint_len"].tolist(),
    }


def block_columns(m: ModelState, tier: int | str | None = None,
                  va_range: tuple[int, int] | None = None) -> dict[str, list[Any]]:
    """The live entries in address order, a list per column."""
    return column_lists(block_arrays(m, tier, va_range), m.block_size)


def blocks(m: ModelState, tier: int | str | None = None, va_range: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """The same as one dict per entry (for Python callers; the attribute
    file is rendered from the columns, without them)."""
    cols = block_columns(m, tier, va_range)
    return [dict(zip(BLOCK_COLUMNS, row)) for row in zip(*(cols[c] for c in BLOCK_COLUMNS))]


# -- attribute text ---------------------------------------------------------------------
def render_stats(m: ModelState) -> str:
    return text.render_stats(stats(m))


def render_tiers(m: ModelState) -> str:
    return text.render_records(tiers(m))


def render_dma(m: ModelState) -> str:
    return text.render_records(dma_state(m))


def render_blocks(m: ModelState) -> str:
    return b"".join(blocks_pieces(m).text).decode()


def blocks_pieces(m: ModelState) -> Pieces:
    """The blocks file in pieces, from a snapshot of the directory taken
    now (a few MiB of arrays at most, not the formatted text); written in
    C where it is built (model/rows.py)."""
    arrays, bs = block_arrays(m), m.block_size
    n = len(arrays["va"])

    def spec(start: int, end: int) -> dict[str, list[Any]]:
        return column_lists(arrays, bs, start, end)

    return Pieces(sum(a.nbytes for a in arrays.values()), rows.block_pieces(n, arrays, bs, spec))
