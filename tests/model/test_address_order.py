"""views.address_order, the blocks listing's order, against a stable
argsort (its specification) on random sets of blocks: dense ranges (the
scatter), sparse ones (the sort), ranges at the top of 64 bits, and
repeated blocks, which a directory never holds but which must still come
out as the sort has them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcpu_dev.model import views

U64_MAX = 2**64 - 1


def spec(blocks: np.ndarray) -> np.ndarray:
    return np.argsort(blocks, kind="stable")


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.sampled_from([0, 1, 2, 3, 100, 1000]),
       spread=st.sampled_from([1, 2, views.DENSE_SPAN - 1, views.DENSE_SPAN, views.DENSE_SPAN + 1, 1000]),
       base=st.sampled_from([0, 1, 2**40, U64_MAX - 2**20]), repeats=st.booleans())
def test_the_order_is_a_stable_sorts(seed: int, n: int, spread: int, base: int, repeats: bool) -> None:
    rng = np.random.default_rng(seed)
    span = max(1, n * spread)
    offsets = rng.integers(0, span, n, dtype=np.uint64) if repeats else \
        rng.permutation(span)[:n].astype(np.uint64)
    blocks = np.uint64(min(base, U64_MAX - span)) + offsets
    assert np.array_equal(views.address_order(blocks), spec(blocks))


def test_a_dense_pool_is_scattered_and_a_sparse_one_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways are taken (the test above would pass if one never was)."""
    rng = np.random.default_rng(1)
    dense = rng.permutation(100_000).astype(np.uint64) + np.uint64(7)
    sparse = dense * np.uint64(views.DENSE_SPAN + 1)
    expected = [spec(dense), spec(sparse)]
    sorted_: list[int] = []
    argsort = np.argsort

    def counted(a: np.ndarray, **kwargs: Any) -> np.ndarray:
        sorted_.append(len(a))
        return argsort(a, **kwargs)

    monkeypatch.setattr(np, "argsort", counted)
    for blocks, want in zip((dense, sparse), expected):
        assert np.array_equal(views.address_order(blocks), want)
    assert sorted_ == [100_000]  # the sparse pool only
