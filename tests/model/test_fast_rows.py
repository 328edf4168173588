"""The blocks file's rows written in C (model/rows.c, model/rows.py)
against model_text, the format's specification: the same bytes from
random snapshots with every field at its edges (zero, each type's largest
value, empty fields, tiers out of range, which the C hands back), and from
models that random command streams left behind."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelkit import small_config
from test_fast_hints import command

from kvcpu_dev.device import model_text as text
from kvcpu_dev.model import DeviceModel, rows, views
from kvcpu_dev.model.rtbd import NO_MOVE, REQUEST_UNKNOWN

pytestmark = pytest.mark.skipif(not rows.available(), reason="kvcpu_dev.model._hints is not built")

#: A snapshot's fields, with types of the same ranges as views.block_arrays'
#: (which holds prefix, dirty and armed as bool, entry as intp).
DTYPES = {
    "va": np.uint64, "entry": np.int64, "tier": np.int8, "prio": np.uint16, "r": np.uint8, "f": np.uint8,
    "last_access": np.uint32, "ref": np.uint8, "prefix": np.uint8, "dirty": np.uint8, "hot": np.bool_,
    "target": np.uint32, "armed": np.uint8, "request": np.uint16, "moving": np.int8, "hint_va": np.uint64,
    "hint_len": np.uint64,
}


def both(arrays: dict[str, np.ndarray], block_size: int) -> tuple[str, str]:
    n = len(arrays["va"])

    def spec(start: int, end: int) -> dict[str, list[Any]]:
        return views.column_lists(arrays, block_size, start, end)

    return "".join(text.block_pieces(n, spec)), b"".join(rows.block_pieces(n, arrays, block_size, spec)).decode()


def written_in_c(arrays: dict[str, np.ndarray], block_size: int) -> bool:
    """Whether the C writes every chunk itself (no chunk handed to the spec)."""
    writer, n = rows._Writer(), len(arrays["va"])
    return all(writer.rows(rows.columns(arrays, block_size, start, min(n, start + rows.CHUNK))) is not None
               for start in range(0, n, rows.CHUNK))


def edge_values(rng: np.random.Generator, dtype: type, n: int) -> np.ndarray:
    """Random values of ``dtype``, a third of them its smallest or largest."""
    info = np.iinfo(dtype) if dtype is not np.bool_ else np.iinfo(np.uint8)
    values = rng.integers(int(info.min), int(info.max), n, dtype=np.int64 if info.min < 0 else np.uint64,
                          endpoint=True)
    edges = rng.random(n)
    values[edges < 0.15] = info.min
    values[(edges >= 0.15) & (edges < 0.3)] = info.max
    return values.astype(dtype)


def snapshot(seed: int, n: int, odd_tiers: float = 0.0) -> dict[str, np.ndarray]:
    """Every field at random and at its edges; the tiers a model holds, but
    for ``odd_tiers`` of them: one Python still names (a negative index)."""
    rng = np.random.default_rng(seed)
    arrays = {name: edge_values(rng, dtype, n) for name, dtype in DTYPES.items()}
    arrays["entry"] = np.abs(arrays["entry"] // 2)  # an index
    sane = rng.random(n) >= odd_tiers
    arrays["tier"] = np.where(sane, rng.integers(0, 4, n), rng.integers(-4, 0, n)).astype(np.int8)
    arrays["moving"] = np.where(sane, rng.integers(NO_MOVE, 4, n), rng.integers(-4, -1, n)).astype(np.int8)
    arrays["request"][rng.random(n) < 0.3] = REQUEST_UNKNOWN
    arrays["armed"] = (rng.random(n) < 0.5).astype(np.uint8) * arrays["armed"]
    return arrays


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), n=st.sampled_from([0, 1, 2, 1023, 1024, 1025, 3000, rows.CHUNK - 1, rows.CHUNK,
                                                      rows.CHUNK + 1, 2 * rows.CHUNK + 5]),
       block_size=st.sampled_from([1, 4096, 2 << 20, 2**63]))
def test_random_snapshots_give_the_same_bytes(seed: int, n: int, block_size: int) -> None:
    arrays = snapshot(seed, n)
    assert written_in_c(arrays, block_size)
    spec, c = both(arrays, block_size)
    assert c == spec


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_odd_tiers_are_written_by_the_spec_chunk_by_chunk(seed: int) -> None:
    arrays = snapshot(seed, 3 * rows.CHUNK, odd_tiers=0.00005)
    arrays["tier"][rows.CHUNK + seed % rows.CHUNK] = -1  # the second chunk's, at least, is the spec's
    assert not written_in_c(arrays, 4096)
    spec, c = both(arrays, 4096)
    assert c == spec


def test_a_chunk_with_a_tier_out_of_range_is_written_by_the_spec() -> None:
    n, bad = 2 * rows.CHUNK + 500, rows.CHUNK + 1500
    arrays = snapshot(7, n)
    arrays["tier"][:] = 1
    arrays["tier"][bad] = -2  # Python's TIER_NAMES[-2]: the C refuses that chunk, and only that one
    writer = rows._Writer()
    written = [writer.rows(rows.columns(arrays, 4096, start, min(n, start + rows.CHUNK))) is not None
               for start in range(0, n, rows.CHUNK)]
    assert written == [True, False, True]
    spec, c = both(arrays, 4096)
    assert c == spec and spec.splitlines()[bad + 1].split()[3] == "T2"


def test_a_tier_no_name_fits_raises_as_the_spec_does() -> None:
    arrays = snapshot(8, 10)
    arrays["tier"][3] = 4
    spec = lambda start, end: views.column_lists(arrays, 4096, start, end)  # noqa: E731
    with pytest.raises(IndexError):
        "".join(text.block_pieces(10, spec))
    with pytest.raises(IndexError):
        b"".join(rows.block_pieces(10, arrays, 4096, spec))


@pytest.mark.parametrize("seed", range(6))
def test_models_left_by_random_streams_list_the_same(seed: int) -> None:
    rng = random.Random(seed)
    m = DeviceModel(small_config(entries=rng.choice([16, 64, 512])))
    step = [0]
    for t in range(2000):
        writes = command(rng, step)
        if writes:
            m.at(t * 1000)
            for offset, value in writes:
                m.mmio_write(offset, value)
        m.work()
    arrays = views.block_arrays(m)
    assert len(arrays["va"]) > 0 and written_in_c(arrays, m.block_size)
    spec, c = both(arrays, m.block_size)
    assert c == spec
    assert c == views.render_blocks(m)  # what the attribute serves


def test_without_the_c_the_spec_writes_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """An extension built without rows.c (or none): the same bytes, from
    model_text alone."""
    arrays = snapshot(9, rows.CHUNK + 10)
    spec, c = both(arrays, 4096)
    monkeypatch.setattr(rows, "available", lambda: False)
    monkeypatch.setattr(rows, "_Writer", None)  # the C is not called
    assert both(arrays, 4096) == (spec, c) and c == spec
