"""Fixtures of the analysis tests."""

from __future__ import annotations

import pytest
from analysis_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    """Each registered family's name."""
    return request.param
