"""FamilySpec is the schema: questions, answers, slots and the rendered SPEC all come from its fields."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vlmforge.core.registry import ModelRegistry
from vlmforge.core.spec import (
    LLAMA_ROTARY,
    AttentionRecipe,
    FamilySpec,
    ImageTokenSource,
    spec_field,
    spec_leaves,
)
from vlmforge.scaffold import schema
from vlmforge.scaffold.generate import TEMPLATE_DIR, GenerationError, render_family, validate_module
from vlmforge.scaffold.report import Answer, ResearchReport

MODULE_TEMPLATE = TEMPLATE_DIR / "template" / "vlmforge" / "adapters" / "{{ name }}.py.jinja"
NON_SPEC = {"adapter_class": "SomeAdapter", "summary": "A family.", "custom_processor": False, "todos": {}}


def _render(answers: dict, **kwargs) -> str:
    rendered = render_family(answers, **kwargs)
    try:
        return rendered.module.read_text()
    finally:
        rendered.cleanup()


def test_every_field_is_documented_and_keys_are_unique() -> None:
    leaves = list(spec_leaves(FamilySpec))
    assert all(leaf.info.help and leaf.info.kind for leaf in leaves)
    keys = [leaf.key for leaf in leaves]
    assert len(keys) == len(set(keys))
    # The historic research keys survive where they differ from the field name.
    assert {leaf.path: leaf.key for leaf in leaves}[
        ("image_token", "config_attribute")
    ] == "image_token_attribute"


def test_a_duplicate_answer_key_or_an_undocumented_field_is_refused() -> None:
    @dataclass(frozen=True)
    class Clashing(AttentionRecipe):
        scaling_copy: str = spec_field("s", kind="text", key="scaling", help="clashes with scaling")

    @dataclass(frozen=True)
    class ClashingSpec(FamilySpec):
        attention: Clashing = spec_field(Clashing(), help="recipe")

    with pytest.raises(TypeError, match="answer key 'scaling'"):
        schema.template_slots(ClashingSpec)

    @dataclass(frozen=True)
    class Bare(AttentionRecipe):
        undocumented: str = "x"

    @dataclass(frozen=True)
    class BareSpec(FamilySpec):
        attention: Bare = spec_field(Bare(), help="recipe")

    with pytest.raises(TypeError, match=r"Bare.undocumented is not declared with spec_field"):
        schema.copier_questions(BareSpec)


def test_the_committed_questions_are_generated_from_the_spec() -> None:
    text = (TEMPLATE_DIR / "copier.yml").read_text()
    stale = (
        f"{TEMPLATE_DIR / 'copier.yml'} is out of date with the FamilySpec fields: run `{schema.REGENERATE}`"
    )
    assert schema.questions_block() in text, stale
    questions = yaml.safe_load(text)
    for leaf in spec_leaves(FamilySpec):
        assert questions[leaf.key]["help"] == leaf.info.help


def test_write_questions_rewrites_only_the_generated_block(tmp_path: Path) -> None:
    copier_yml = tmp_path / "copier.yml"
    stale = (TEMPLATE_DIR / "copier.yml").read_text().replace("type: bool", "type: str", 1)
    copier_yml.write_text(stale)
    assert schema.write_questions(copier_yml) is True
    assert copier_yml.read_text() == (TEMPLATE_DIR / "copier.yml").read_text()
    assert schema.write_questions(copier_yml) is False
    copier_yml.write_text("name: {type: str}\n")
    with pytest.raises(ValueError, match="no generated block"):
        schema.write_questions(copier_yml)


@pytest.mark.parametrize("family", ["llava", "smolvlm", "qwen2_5_vl", "qwen3_vl"])
def test_spec_answers_round_trip(family: str) -> None:
    spec = ModelRegistry.adapters()[family].spec
    assert schema.spec_from_answers(schema.answers_from_spec(spec)) == spec


def test_empty_answers_mean_none_or_the_default() -> None:
    base = {"name": "fam", "checkpoints": ("org/model",)}
    spec = schema.spec_from_answers({**base, "gate_proj": "", "q_norm": None, "scaling": None})
    assert spec.modules.gate_proj is None  # admits None: empty means none
    assert spec.attention.scaling == "scaling"  # does not: an unknown answer leaves the default
    assert spec.modules.up_proj == "up_proj"  # not answered at all: the default
    assert spec.model_class == ""  # required and unanswered: empty (the template adds a TODO)
    kwargs = schema.spec_kwargs({"model_types": ["x"]}, identity=False)
    assert "name" not in kwargs and "tiny_reference" not in kwargs and kwargs["model_types"] == ("x",)


def test_defaults_are_omitted_capabilities_always_written_and_llama_rotary_named() -> None:
    spec = FamilySpec(
        name="plain", checkpoints=("org/plain",), model_types=("plain",), model_class="M", language_model="lm"
    )
    answers = schema.answers_from_spec(spec) | NON_SPEC
    text = _render(answers)
    spec_text = text.split("SPEC = ")[1]
    for omitted in ("aliases", "lm_head", "modules", "attention", "image_token", "prompt", "notes"):
        assert f"{omitted}=" not in spec_text, spec_text
    assert (
        "capabilities=Capabilities(\n"
        "        contiguous_image_tokens=True, supports_batching=True, strict_residual_stream=True\n    ),"
    ) in spec_text
    # A TODO forces the line out even at its default; LLAMA_ROTARY is spelled by name and imported.
    text = _render(answers | {"todos": {"rotary_function": "check it", "attention_recipe": "whole group"}})
    assert "from vlmforge.core.spec import LLAMA_ROTARY\n" in text
    assert (
        "    # TODO(vlmforge): whole group\n    attention=AttentionRecipe(\n"
        "        # TODO(vlmforge): check it\n        rotary_function=LLAMA_ROTARY,\n    ),"
    ) in text
    # The constant's value lives in spec.py only: the template gets it from the generated layout.
    assert (
        LLAMA_ROTARY not in MODULE_TEMPLATE.read_text() and "LLAMA_ROTARY" not in MODULE_TEMPLATE.read_text()
    )


# ------------------------------------------------------------------------- adding a field: two edits
# Edit 1 (spec.py): a recipe gains a documented field; the spec uses the extended recipe.
@dataclass(frozen=True)
class WindowedRecipe(AttentionRecipe):
    sliding_window: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute holding the sliding-window size (empty if none)",
    )


@dataclass(frozen=True)
class WindowedSpec(FamilySpec):
    attention: WindowedRecipe = spec_field(
        WindowedRecipe(), slot="attention_recipe", help="How the attention computes pre-softmax scores"
    )


def _answer_window(report: ResearchReport) -> ResearchReport:
    """Edit 2 (research): answer the new field's key."""
    report.add(
        Answer("sliding_window", "Sliding-window attribute", "sliding_window", "Attention.sliding_window")
    )
    return report


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_new_spec_field_needs_only_the_field_and_its_research(
    researched: Callable[..., ResearchReport], tmp_path: Path
) -> None:
    template_before = _tree_digest(TEMPLATE_DIR)
    llava = researched("llava", False)
    report = _answer_window(dataclasses.replace(llava, answers=dict(llava.answers)))
    answers = report.copier_answers("windowed", checkpoints=["org/windowed"], spec_class=WindowedSpec)
    assert answers["sliding_window"] == "sliding_window"
    question = schema.copier_questions(WindowedSpec)["sliding_window"]
    assert question["help"].startswith("Attention attribute holding the sliding-window size")
    assert "sliding_window" in schema.template_slots(WindowedSpec)

    text = _render(answers, spec_class=WindowedSpec)
    assert 'sliding_window="sliding_window"' in text
    module = tmp_path / "windowed.py"
    module.write_text(text)
    spec = validate_module(module, "windowed")
    assert isinstance(spec, WindowedSpec) and isinstance(spec.attention, WindowedRecipe)
    assert spec.attention == report.to_spec("windowed", ["org/windowed"], spec_class=WindowedSpec).attention
    assert spec.attention.sliding_window == "sliding_window"
    assert spec.image_token == ImageTokenSource(token="<image>")

    # At its default the field is omitted, and the module still reads it back.
    text = _render(answers | {"sliding_window": ""}, spec_class=WindowedSpec)
    assert "sliding_window" not in text
    module.write_text(text)
    assert validate_module(module, "windowed").attention.sliding_window is None

    # Nothing else had to change: the packaged template and its committed questions are untouched.
    assert _tree_digest(TEMPLATE_DIR) == template_before
    assert "sliding_window" not in (TEMPLATE_DIR / "copier.yml").read_text()


def test_a_subclass_is_rendered_from_a_staged_copy_of_a_local_template(tmp_path: Path) -> None:
    spec = WindowedSpec(
        name="w", checkpoints=("o/w",), model_types=("w",), model_class="M", language_model="lm"
    )
    answers = schema.answers_from_spec(spec) | NON_SPEC
    local = tmp_path / "family"
    shutil.copytree(TEMPLATE_DIR, local)
    before = _tree_digest(local)
    assert "class SomeAdapter(ModelAdapter):" in _render(answers, template=local, spec_class=WindowedSpec)
    assert _tree_digest(local) == before
    with pytest.raises(GenerationError, match="local template directory"):
        render_family(answers, template="https://example.invalid/template.git", spec_class=WindowedSpec)
