"""Shared fixtures: tiny models are built once per session (each build takes well under a second)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch

from vlmforge.core.errors import UnsupportedReleaseError
from vlmforge.core.runtime import HookedVLM

# Tiny models are dominated by per-op overhead: on a shared 2-core machine torch's default thread
# pool makes them 10-50x slower, and under `pytest -n 2` two pools oversubscribe the cores.
torch.set_num_threads(1)

SEED_FAMILIES = ("llava", "smolvlm", "qwen2_5_vl", "qwen3_vl")


def tiny_vlm(family: str, dtype: torch.dtype = torch.float32) -> HookedVLM:
    """A tiny random HookedVLM of ``family`` (cached for the session; do not mutate its model).

    A family the installed transformers release cannot run (``vlmforge.core.versions.BROKEN_FORWARDS``)
    skips the calling test with the reason ("not applicable on transformers 5.24: ..."), visibly.
    """
    try:
        return _tiny_vlm(family, dtype)
    except UnsupportedReleaseError as error:
        pytest.skip(error.reason)


@functools.cache
def _tiny_vlm(family: str, dtype: torch.dtype) -> HookedVLM:
    return HookedVLM.from_pretrained(f"tiny/{family}", device="cpu", dtype=dtype)


@pytest.fixture(params=SEED_FAMILIES)
def seed_vlm(request) -> HookedVLM:
    return tiny_vlm(request.param)


@pytest.fixture(scope="session")
def tiny() -> Callable[..., HookedVLM]:
    """``tiny(family, dtype=torch.float32)``: the session's cached tiny HookedVLM of ``family``."""
    return tiny_vlm


pytest_plugins = ["pytester"]
