"""Fixtures for the evaluation tests (helpers live in evalkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalkit import synthetic, write_jsonl  # tests/evaluation is on pythonpath (pyproject)

from kvcpu_dev.evaluation.traces import Trace


@pytest.fixture
def small_trace() -> Trace:
    return synthetic()


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "synthetic.jsonl", synthetic())
