"""Quality bar: scaffolding each seed family from its config alone reproduces the hand-written spec.

For every seed family, from its stored reference checkpoint config and from the bare model_type,
``scaffold-new-model`` must write a module whose :class:`FamilySpec` equals the hand-written one
field by field (checkpoints / aliases / name / notes / tiny_reference aside) with no TODO left,
i.e. zero hand edits.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tests.scaffold.conftest import RESEARCHED_FIELDS
from vlmforge.core.registry import ModelRegistry
from vlmforge.scaffold.cli import main
from vlmforge.scaffold.generate import render_family
from vlmforge.scaffold.schema import answers_from_spec

# Fields research must get right; the rest identify the family rather than describe the architecture.
COMPARED_FIELDS = RESEARCHED_FIELDS

SEED_SOURCES = [
    ("llava-hf/llava-1.5-7b-hf", "llava"),
    ("HuggingFaceTB/SmolVLM-256M-Instruct", "smolvlm"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl"),
    ("Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl"),
    ("llava", "llava"),
    ("idefics3", "smolvlm"),
    ("qwen2_5_vl", "qwen2_5_vl"),
    ("qwen3_vl", "qwen3_vl"),
]


@pytest.mark.parametrize(("source", "family"), SEED_SOURCES)
def test_scaffolded_seed_family_equals_hand_written(
    source: str, family: str, tmp_path: Path, capsys, load_spec
) -> None:
    # --force: the installed seed family already owns this name and model_type.
    dest = tmp_path / "project"
    assert main([source, "--dest", str(dest), "--name", family, "--force"]) == 0, capsys.readouterr().err
    module = dest / "vlmforge_adapters" / f"{family}.py"
    text = module.read_text()
    generated = load_spec(module)
    hand_written = ModelRegistry.adapters()[family].spec
    mismatches = {
        field: (getattr(generated, field), getattr(hand_written, field))
        for field in COMPARED_FIELDS
        if getattr(generated, field) != getattr(hand_written, field)
    }
    assert not mismatches, f"{source}: generated != hand-written: {mismatches}"
    assert "TODO(vlmforge)" not in text, f"{source}: the generated module still needs hand edits:\n{text}"
    assert (dest / "vlmforge_adapters" / f".copier-answers.{family}.yml").is_file()


def _after_docstring(text: str) -> str:
    end = ast.parse(text).body[0].end_lineno
    return "".join(text.splitlines(keepends=True)[end:])


@pytest.mark.parametrize("family", ["llava", "smolvlm", "qwen2_5_vl", "qwen3_vl"])
def test_seed_module_is_what_the_template_writes_for_its_spec(family: str) -> None:
    """Below their hand-written docstrings, the seed modules are exactly the template's rendering."""
    adapter = ModelRegistry.adapters()[family]
    answers = answers_from_spec(adapter.spec) | {
        "adapter_class": adapter.__name__,
        "summary": "unused",
        "custom_processor": False,
        "todos": {},
    }
    rendered = render_family(answers)
    try:
        expected = _after_docstring(rendered.module.read_text())
    finally:
        rendered.cleanup()
    assert _after_docstring(Path(inspect.getfile(adapter)).read_text()) == expected
