"""Shared fixtures of the scaffolder tests: research results are computed once per session.

Research of one seed family builds a tiny random model and measures it (a few seconds on 2 CPU
cores), so tests that only need *a* report share them instead of recomputing.
"""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from vlmforge.core.registry import ModelRegistry
from vlmforge.core.spec import FamilySpec, spec_nodes
from vlmforge.scaffold.research import ResearchReport, research

#: The spec fields research must get right: every field but those identifying the family (name,
#: checkpoints, aliases, notes, tiny reference), which the caller supplies.
RESEARCHED_FIELDS: tuple[str, ...] = tuple(
    node.name for node in spec_nodes(FamilySpec) if not node.info.identity
)


@functools.cache
def _research(source: str, measure: bool = True) -> ResearchReport:
    return research(source, measure=measure)


@pytest.fixture(scope="session")
def researched() -> Callable[..., ResearchReport]:
    """``researched(source, measure=True)``: a memoized :func:`vlmforge.scaffold.research.research`."""
    return _research


def _load_spec(path: Path) -> FamilySpec:
    """The SPEC of a generated module, imported under a throwaway name without touching the registry."""
    name = f"_scaffold_test_{uuid.uuid4().hex}"
    try:
        with ModelRegistry.isolated():
            module = ModelRegistry.import_adapter_file(path, name)
    finally:
        sys.modules.pop(name, None)
    return module.SPEC


@pytest.fixture(scope="session")
def load_spec() -> Callable[[Path], FamilySpec]:
    """``load_spec(path)``: the SPEC of a generated module (see :func:`_load_spec`)."""
    return _load_spec
