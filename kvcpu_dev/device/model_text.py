"""The device model's text formats: the attribute files' keys and columns,
their rendering and the parsers kvctl uses to read them back.  No numpy and
nothing of the model: the model (model/views.py) renders with it, and kvctl
and the bench's metrics read with it without loading the model.

Formats (all rendered only when read):
- ``model_stats``: ``key=value`` lines.
- ``tiers``, ``dma``: one record per line, space-separated ``key=value``.
- ``blocks``: a ``# column ...`` header line, then one whitespace-separated
  row per live entry in address order; ``-`` marks an empty field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: The tiers, by index: keys as the configuration spells them, names as the
#: files print them.
TIER_KEYS = ("hbm", "t1", "t2", "t3")
TIER_NAMES = ("HBM", "T1", "T2", "T3")

#: Cumulative counters, in the order model_stats prints them.
COUNTERS = (
    "steps", "scans", "scans_superseded", "scan_ns_total", "scan_ns_max",
    "hint_hot", "hint_evict", "hint_prefetch", "hint_share", "hints_zero_len",
    "hint_untracked_blocks", "blocks_allocated", "blocks_reclaimed", "alloc_spilled",
    "alloc_no_room", "dir_full", "evict_candidates_total", "evictions_issued",
    "evictions_deferred_full", "demotions_cancelled", "moves_cancelled_reclaim",
    "prefetch_issued_hint", "prefetch_issued_scan", "prefetch_issued_window",
    "prefetch_held_window", "prefetch_already_staged",
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
#: Written "{:#x}"; a tier, by its name (TIER_NAMES).  Any other field is a
#: decimal integer, and an empty one "-".
HEX_COLUMNS = {"va", "hint_va"}
NAME_COLUMNS = {"tier", "moving"}


# -- tiers ------------------------------------------------------------------------------
def tier_by_name(text: str) -> int | None:
    """The tier a name or key spells (any case), or None."""
    t = text.strip().lower()
    return TIER_KEYS.index(t) if t in TIER_KEYS else None  # a name in lower case is its key


def tier_index(tier: int | str) -> int:
    """A tier given as a name (HBM, T1, ...), a key (hbm, t1, ...) or a
    number 0-3; ValueError names what is accepted."""
    if isinstance(tier, str):
        named = tier_by_name(tier)
        if named is not None:
            return named
        try:
            number = int(tier.strip(), 0)
        except ValueError:
            raise ValueError(f"no tier {tier!r} (HBM, T1, T2, T3 or 0-3)") from None
    else:
        number = tier
    if number not in range(4):
        raise ValueError(f"no tier {tier!r} (HBM, T1, T2, T3 or 0-3)")
    return number


# -- rendering ----------------------------------------------------------------------------
def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in HEX_COLUMNS:
        return f"{value:#x}"
    return str(value)


def render_stats(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def render_records(rows: list[dict[str, Any]]) -> str:
    return "".join(" ".join(f"{k}={v}" for k, v in row.items()) + "\n" for row in rows)


def render_block_rows(rows: list[dict[str, Any]]) -> str:
    return render_block_columns({c: [row[c] for row in rows] for c in BLOCK_COLUMNS})


#: Rows formatted at a time: a full directory's text is built in pieces, so
#: its formatted fields never all exist at once.
CHUNK = 1024
BLOCKS_HEADER = "# " + " ".join(BLOCK_COLUMNS) + "\n"


def render_block_columns(cols: dict[str, list[Any]]) -> str:
    """The blocks file from a list per column (None: an empty field)."""
    n = len(cols[BLOCK_COLUMNS[0]])
    return "".join(block_pieces(n, lambda start, end: {c: cols[c][start:end] for c in BLOCK_COLUMNS}))


def block_pieces(n: int, rows: Callable[[int, int], dict[str, list[Any]]]) -> Iterator[str]:
    """The blocks file of ``n`` entries, a header and then CHUNK rows a
    piece; ``rows(start, end)`` gives those rows as a list per column."""
    yield BLOCKS_HEADER
    for start in range(0, n, CHUNK):
        yield render_block_chunk(rows(start, min(n, start + CHUNK)))


def render_block_chunk(cols: dict[str, list[Any]]) -> str:
    """Rows of the blocks file, without the header, from a list per column."""
    if not cols[BLOCK_COLUMNS[0]]:
        return ""
    fields = [_texts(c, cols[c]) for c in BLOCK_COLUMNS]
    return "\n".join(map(" ".join, zip(*fields))) + "\n"


def _texts(key: str, values: list[Any]) -> list[str]:
    """_fmt over a column, at C speed where no field is empty (a soak's
    `blocks` reader every 2 s spent 12% of the daemon's time here)."""
    text = "{:#x}".format if key in HEX_COLUMNS else str
    if None in values:
        return ["-" if v is None else text(v) for v in values]
    return list(map(text, values))


# -- parsers (kvctl reads the files back) -----------------------------------------------------
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
            c: None if f == "-" else (f if c in NAME_COLUMNS else _value(f))
            for c, f in zip(columns, fields)
        })
    return rows
