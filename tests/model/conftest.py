"""Fixtures for the device model tests (helpers live in modelkit.py)."""

from __future__ import annotations

import pytest
from modelkit import CheckedModel, small_config  # tests/model is on pythonpath (pyproject)


@pytest.fixture
def model():
    return CheckedModel(small_config())
