"""The blocks file's rows in C (rows.c), from a views.block_arrays snapshot.

The daemon's one Python thread formats the listing, and every other reader
waits meanwhile: 100,000 rows took 300 ms through model_text's Python (a
`kvctl blocks` under a mixed flood, 370-670 ms).  The C writes the same
bytes from the arrays.  model_text stays the format's specification: a
chunk the C cannot write (a tier out of range) is written by it, and
tests/model/test_fast_rows.py compares the two on random directories.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..device import model_text as text
from ..device.model_text import BLOCK_COLUMNS, HEX_COLUMNS, NAME_COLUMNS, TIER_NAMES
from .rtbd import NO_MOVE, REQUEST_UNKNOWN

try:
    from ._hints import ffi, lib
except ImportError:  # not built: model_text's Python writes them (slower, same bytes)
    ffi = lib = None

#: Rows the spec writes from a list per column (views.column_lists).
SpecRows = Callable[[int, int], dict[str, list[Any]]]


def available() -> bool:
    """Built, and built with rows.c (an older build of the extension has the
    hint engine alone)."""
    return lib is not None and hasattr(lib, "kvm_format_rows")


#: Rows the C writes at a time: ~0.8 MB of text, about one 1 MiB read's
#: (attrfs.READ_SLICE).  Each chunk's columns cost ~40 us of numpy calls
#: whatever its size: at model_text.CHUNK's 1,024 rows, 0.8 ms a read.
CHUNK = 8192


def block_pieces(n: int, arrays: dict[str, np.ndarray], block_size: int, spec: SpecRows) -> Iterator[bytes]:
    """model_text.block_pieces of the same ``n`` rows, as bytes: written in
    C, or by the spec where it is not built."""
    if not available():
        yield from (piece.encode() for piece in text.block_pieces(n, spec))
        return
    writer = _Writer()
    yield text.BLOCKS_HEADER.encode()
    for start in range(0, n, CHUNK):
        end = min(n, start + CHUNK)
        written = writer.rows(columns(arrays, block_size, start, end))
        yield written if written is not None else text.render_block_chunk(spec(start, end)).encode()


def columns(arrays: dict[str, np.ndarray], block_size: int, start: int, end: int
            ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Rows start..end, a column each (BLOCK_COLUMNS): its values as uint64
    and which of them are empty (None: none), as views.column_lists has them."""
    a = {k: v[start:end] for k, v in arrays.items()}
    moving = a["moving"].astype(np.int64)
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        name: (a[name], None) for name in ("va", "entry", "r", "f", "last_access", "ref", "prefix", "dirty", "hot",
                                           "hint_va", "hint_len")}
    out["len"] = (np.full(end - start, block_size), None)
    out["tier"] = (a["tier"].astype(np.int64), None)
    out["prio"] = (a["prio"], None)
    out["target"] = (a["target"], a["armed"] == 0)
    out["request"] = (a["request"], a["request"] == REQUEST_UNKNOWN)
    out["moving"] = (np.where(moving == NO_MOVE, 0, moving), moving == NO_MOVE)
    return {name: (np.ascontiguousarray(values).astype(np.uint64, copy=False),
                   None if empty is None else np.ascontiguousarray(empty, dtype=np.uint8))
            for name, (values, empty) in ((c, out[c]) for c in BLOCK_COLUMNS)}


class _Writer:
    """One listing's C call: its output buffer, grown to the largest chunk."""

    FORMATS = {name: lib.KVM_HEX if name in HEX_COLUMNS else lib.KVM_NAME if name in NAME_COLUMNS
               else lib.KVM_DECIMAL for name in BLOCK_COLUMNS} if available() else {}

    def __init__(self) -> None:
        self._names = [ffi.new("char[]", name.encode()) for name in TIER_NAMES]
        self._name_ptrs = ffi.new("char *[]", self._names)
        self._cols = ffi.new("struct kvm_column[]", len(BLOCK_COLUMNS))
        self._out = ffi.new("char[]", 0)

    def rows(self, cols: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> bytes | None:
        """The rows' text, or None where the C refuses (a name out of range)."""
        n = len(cols[BLOCK_COLUMNS[0]][0])
        cap = n * (len(BLOCK_COLUMNS) * lib.KVM_FIELD_MAX + 1)
        if len(self._out) < cap:
            self._out = ffi.new("char[]", cap)
        for k, name in enumerate(BLOCK_COLUMNS):  # pointers into cols' arrays, alive through the call
            values, empty = cols[name]
            self._cols[k].values = ffi.cast("uint64_t *", ffi.from_buffer(values))
            self._cols[k].empty = ffi.cast("uint8_t *", ffi.from_buffer(empty)) if empty is not None else ffi.NULL
            self._cols[k].format = self.FORMATS[name]
        size = lib.kvm_format_rows(self._out, cap, n, self._cols, len(BLOCK_COLUMNS), self._name_ptrs,
                                   len(self._names))
        return None if size < 0 else ffi.unpack(self._out, size)
