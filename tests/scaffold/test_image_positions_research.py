"""Kosmos-2-style families: image positions from a processor mask, an attention output norm, a processor
found in the model's own package, and the measured generation declarations, all researched generically."""

from __future__ import annotations

import pytest
import torch
import transformers

from vlmforge.core.spec import ImageTokenSource, spec_leaves
from vlmforge.scaffold.research.image_positions import mask_candidates
from vlmforge.scaffold.schema import _validator
from vlmforge.tiny.recipes import (
    _generic_recipe,
    _package_processor,
    resolve_processor_classes,
    tokenizer_recipe,
)


def test_mask_candidates_are_forward_parameters_shaped_like_input_ids_with_only_0_and_1() -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),  # a mask of something else by definition
        "image_embeds_position_mask": torch.tensor([[0, 1, 1, 0]]),
        "token_type_ids": torch.tensor([[0, 2, 2, 0]]),  # not 0/1
        "other_mask": torch.tensor([[0, 1, 0, 0]]),  # not taken by the model's forward
        "pixel_values": torch.zeros(1, 3, 2, 2),  # not shaped like input_ids
    }
    accepted = {"input_ids", "attention_mask", "image_embeds_position_mask", "token_type_ids", "pixel_values"}
    assert mask_candidates(inputs, accepted) == ["image_embeds_position_mask"]
    assert mask_candidates(inputs, accepted | {"other_mask"}) == ["image_embeds_position_mask", "other_mask"]


def test_the_token_string_may_be_empty_when_a_position_mask_is_given() -> None:
    [token] = [leaf for leaf in spec_leaves(ImageTokenSource) if leaf.key == "image_token"]
    validator = _validator(token, [token])
    assert "not image_token and not image_token_attribute and not image_position_mask" in validator
    assert "give image_token_attribute, image_position_mask or image_token" in validator


def test_a_processor_missing_from_the_auto_mapping_is_found_in_the_models_own_package() -> None:
    # transformers 5 registers no processor class under "kosmos-2"; its package defines exactly one.
    assert _package_processor(transformers.Kosmos2Config) is transformers.Kosmos2Processor
    classes = resolve_processor_classes("kosmos-2")
    assert classes["processor"] is transformers.Kosmos2Processor
    assert "image_processor" in classes
    # A package without a processing module has none to offer.
    assert _package_processor(transformers.LlamaConfig) is None


def test_a_processor_reading_the_unknown_token_gets_one_with_the_first_id() -> None:
    recipe = tokenizer_recipe(transformers.Kosmos2Config())
    assert (recipe.unk_token, recipe.leading_special_tokens) == ("<unk>", ("<unk>",))
    # LLaVA's processor never reads it: its generic recipe has none.
    llava = _generic_recipe(transformers.LlavaConfig())
    assert (llava.unk_token, llava.leading_special_tokens) == (None, ())


@pytest.fixture(scope="module")
def kosmos2(researched):
    return researched("kosmos-2")


def test_research_measures_the_position_mask_and_settles_the_image_token_as_none(kosmos2) -> None:
    mask = kosmos2.answers["image_position_mask"]
    assert (mask.value, mask.status) == ("image_embeds_position_mask", "measured")
    for key in ("image_token_attribute", "image_token"):
        assert kosmos2.answers[key].value is None
        assert not kosmos2.answers[key].needs_edit, kosmos2.answers[key]


def test_research_finds_the_attention_output_norm_and_none_elsewhere(kosmos2, researched) -> None:
    assert kosmos2.value("output_norm") == "inner_attn_ln"
    assert researched("llava").value("output_norm") is None
    # Qwen3-VL's q/k norms are norms of the attention, but not of its output.
    assert researched("qwen3_vl").value("output_norm") is None


def test_research_measures_the_generation_declarations(kosmos2, researched) -> None:
    llava = researched("llava")
    assert (llava.value("requires_image"), llava.value("generates_batches")) == (False, True)
    assert kosmos2.value("requires_image") is True
    assert "pixel_values" in kosmos2.answers["requires_image"].evidence
    # Kosmos-2's fairseq positions count the left padding once the prompt is cached.
    assert kosmos2.value("generates_batches") is False
