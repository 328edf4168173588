"""Fixtures for the device model tests (helpers live in modelkit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelkit import CheckedModel, small_config  # noqa: E402


@pytest.fixture
def model():
    return CheckedModel(small_config())
