"""Every registered conformance check, run on every model under test.

The plugin parametrizes :func:`test_check` over the models (``--model`` / ``--all-models``) and the
check registry (:data:`vlmforge.harness.checks.CHECKS`), and skips a check with its reason where
the model lacks a capability it requires or it does not apply.
"""

from __future__ import annotations

import pytest

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import Check


def test_check(conformance_check: Check, vlm: HookedVLM, request: pytest.FixtureRequest) -> None:
    """Run one check on one model; its max-abs difference goes into the conformance matrix."""
    result = conformance_check.function(vlm)
    if result.max_diff is not None:
        request.node.user_properties.append(("max_diff", result.max_diff))
