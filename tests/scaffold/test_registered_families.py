"""Zero edits, held: every registered family module is what ``scaffold-new-model`` writes for it.

For each family in the registry, research is re-run on the family's tiny reference (the model_type or
stored config the module was scaffolded from) and the spec it yields must equal the committed module's,
field by field (identity fields aside: name, checkpoints, aliases, notes, tiny reference; measured
leaves aside too, e.g. the capability flags, since research measures them on a tiny model that the
conformance matrix measures again). The module must carry no ``TODO(vlmforge)``. A family whose module
was edited by hand says so in :data:`vlmforge.scaffold.coverage.HAND_EDITS` with the reason, and only
those fields may differ.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.scaffold.conftest import RESEARCHED_FIELDS
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.spec import FamilySpec, SpecNode, spec_nodes
from vlmforge.scaffold.coverage import HAND_EDITS
from vlmforge.scaffold.research.pipeline import research

_NODES = {node.name: node for node in spec_nodes(FamilySpec)}
# A measured top-level field (batches_mixed_image_sizes) has nothing to compare without a tiny model.
COMPARED_FIELDS = tuple(name for name in RESEARCHED_FIELDS if not _NODES[name].info.measured)
FAMILIES = sorted(ModelRegistry.adapters())


def _held(node: SpecNode, value: Any) -> Any:
    """``value`` without its measured leaves (``spec_field(measured=True)``): research without a tiny
    model cannot give those (the capability flags, the image marker ids); the conformance matrix measures
    them on every run."""
    if node.group is None:
        return value
    return {
        child.name: _held(child, getattr(value, child.name))
        for child in node.children
        if not child.info.measured
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_registered_family_is_what_research_writes(family: str) -> None:
    adapter = ModelRegistry.adapters()[family]
    spec = adapter.spec
    source = spec.tiny_reference or spec.checkpoints[0]
    researched = research(source, name=family, measure=False).spec_kwargs()
    edited = HAND_EDITS.get(family, {})
    mismatches = {
        field: (researched[field], getattr(spec, field))
        for field in COMPARED_FIELDS
        if field not in edited
        and _held(_NODES[field], researched[field]) != _held(_NODES[field], getattr(spec, field))
    }
    assert not mismatches, f"{family}: research of {source} != the committed module: {mismatches}"
    assert "TODO(vlmforge)" not in Path(inspect.getfile(adapter)).read_text()


def test_hand_edits_name_registered_families_fields_and_reasons() -> None:
    for family, fields in HAND_EDITS.items():
        assert family in FAMILIES, family
        for field, reason in fields.items():
            assert field in COMPARED_FIELDS and len(reason) > 20, (family, field, reason)


def test_the_coverage_record_is_in_sync_with_the_registry() -> None:
    """FAMILIES.md is what ``python -m vlmforge.scaffold.coverage`` prints now (regenerate it if not)."""
    root = Path(__file__).resolve().parents[2]
    fresh = subprocess.run(
        [sys.executable, "-m", "vlmforge.scaffold.coverage"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout
    assert (root / "FAMILIES.md").read_text() == fresh, (
        "regenerate: python -m vlmforge.scaffold.coverage > FAMILIES.md"
    )
    for family in FAMILIES:
        assert f"| `{family}` |" in fresh, family
