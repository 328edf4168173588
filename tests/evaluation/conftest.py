"""Fixtures for the evaluation tests (helpers live in evalkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evalkit import synthetic, write_jsonl  # noqa: E402

from kvcpu_dev.evaluation.traces import Trace  # noqa: E402


@pytest.fixture
def small_trace() -> Trace:
    return synthetic()


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "synthetic.jsonl", synthetic())
