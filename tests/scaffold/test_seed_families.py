"""Quality bar: scaffolding each seed family from its config alone reproduces the hand-written spec.

For every seed family, from its stored reference checkpoint config and from the bare model_type,
``scaffold-new-model`` must write a module whose :class:`FamilySpec` equals the hand-written one
field by field (checkpoints / aliases / name / notes / tiny_reference aside) with no TODO left,
i.e. zero hand edits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmforge.core.registry import ModelRegistry
from vlmforge.scaffold.cli import main

# Fields research must get right; the rest identify the family rather than describe the architecture.
COMPARED_FIELDS = (
    "model_types",
    "model_class",
    "language_model",
    "lm_head",
    "modules",
    "attention",
    "image_token",
    "prompt",
    "capabilities",
)

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
    assert main([source, "--dest", str(tmp_path), "--name", family]) == 0, capsys.readouterr().err
    module = tmp_path / "vlmforge" / "adapters" / f"{family}.py"
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
    assert (tmp_path / "vlmforge" / "adapters" / f".copier-answers.{family}.yml").is_file()
