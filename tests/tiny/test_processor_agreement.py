"""The tiny model and its real processor agree: image-token counts, token ids, prompt format (issue #9).

Models are built without the dimension-coincidence check (another concern, tested in test_tiny.py) so that
these tests isolate the processor side.
"""

from __future__ import annotations

import functools
import types
import warnings

import pytest
import torch
from PIL import Image
from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin, SiglipImageProcessor

from vlmforge.tiny import build_tiny_processor, model_class_for, resolve_processor_classes, tiny_recipe
from vlmforge.tiny.agreement import (
    ImageTokenMismatchError,
    check_image_token_agreement,
    image_token_agreement,
)
from vlmforge.tiny.image_tokens import vision_prefix_tokens
from vlmforge.tiny.pipeline import expanded_image_tokens
from vlmforge.tiny.processor import (
    IMAGE_PROCESSOR_RECIPES,
    _recipe,
    _set_flat_defaults,
    processor_for_config,
    text_image_placeholder,
)

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
SIZES = ((56, 56), (84, 56))
# Families whose processor and model disagreed before issue #9 (and still build with the default shrinker).
AGREEING = [
    "llava_onevision",
    "paligemma",
    "got_ocr2",
    "ovis2",
    "cohere2_vision",
    "deepseek_vl",
    "janus",
    "deepseek_vl_hybrid",
    "internvl",
    "vipllava",  # CLIP CLS token, no feature-select strategy: the model drops the CLS, the processor must too
    "aya_vision",  # processor parameters named like config keys: downsample_factor, img_size
    "mistral3",  # spatial_merge_size
    "gemma3",  # the processor finds <boi> in the prompt and writes tokenizer.image_token
]


@functools.cache
def _build(model_type: str) -> tuple[PreTrainedModel, ProcessorMixin, PretrainedConfig]:
    recipe = tiny_recipe(model_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class_for(recipe.config)._from_config(recipe.config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = processor_for_config(model.config, recipe.tokenizer)
    return model, processor, model.config


def _inputs(processor: ProcessorMixin, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    return processor(text=[prompt], images=[Image.new("RGB", size, (90, 140, 200))], return_tensors="pt")


@pytest.mark.parametrize("model_type", AGREEING)
def test_processor_image_tokens_equal_model_image_features(model_type: str) -> None:
    model, processor, _ = _build(model_type)
    measured = image_token_agreement(model, processor, SIZES)
    assert [size for size, _, _ in measured] == list(SIZES), "agreement could not be measured"
    for size, tokens, features in measured:
        assert tokens > 0, f"{size}: the prompt has no image token"
        assert tokens == features, f"{size}: processor writes {tokens} image tokens, model makes {features}"


@pytest.mark.parametrize("model_type", AGREEING)
def test_forward_with_an_image(model_type: str) -> None:
    model, processor, _ = _build(model_type)
    inputs = _inputs(processor, SIZES[1])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("model_type", "key"), [("internvl", "image_seq_length"), ("got_ocr2", "image_seq_length")]
)
def test_mismatch_check_names_the_corrupted_key(model_type: str, key: str) -> None:
    model, _, config = _build(model_type)
    recipe = tiny_recipe(model_type)
    corrupted = type(config).from_dict(config.to_dict())
    setattr(corrupted, key, getattr(config, key) + 3)
    processor = processor_for_config(corrupted, recipe.tokenizer)
    model.config = corrupted
    try:
        with pytest.raises(ImageTokenMismatchError, match=rf"{key}={getattr(config, key) + 3}"):
            check_image_token_agreement(model, processor, SIZES)
    finally:
        model.config = config
    check_image_token_agreement(model, processor_for_config(config, recipe.tokenizer), SIZES)


def test_image_processor_size_read_from_the_instance() -> None:
    # DeepseekVLImageProcessor keeps size=384 on the instance, not the class: it must follow the tiny tower.
    _, processor, config = _build("deepseek_vl")
    side = config.vision_config.image_size
    assert processor.image_processor.size.height == processor.image_processor.size.width == side
    # A second tower's size follows its own config (`high_res_size` <- `high_res_vision_config`).
    _, hybrid, hybrid_config = _build("deepseek_vl_hybrid")
    assert hybrid.image_processor.high_res_size.height == hybrid_config.high_res_vision_config.image_size


def test_recipes_match_base_classes() -> None:
    class CustomImageProcessor(SiglipImageProcessor):
        pass

    assert (
        _recipe(IMAGE_PROCESSOR_RECIPES, CustomImageProcessor)
        is IMAGE_PROCESSOR_RECIPES["SiglipImageProcessor"]
    )


def test_processor_found_through_related_model_types() -> None:
    # No processor is registered under these model_types: a parent family's (name prefix, sub-configs).
    assert resolve_processor_classes("qwen2_5_omni_thinker")["processor"].__name__ == "Qwen2_5OmniProcessor"
    assert resolve_processor_classes("glmga")["processor"].__name__ == "Glm4vProcessor"


def test_cls_token_detected_from_the_tower() -> None:
    assert vision_prefix_tokens(tiny_recipe("llava").config) == 1  # CLIP prepends a class embedding
    assert vision_prefix_tokens(tiny_recipe("llava_onevision").config) == 0  # SigLIP does not


def test_stale_real_size_counts_are_reconciled() -> None:
    # Janus keeps vision_config.num_image_tokens=576 and GOT-OCR2 downsamples 4x per side in its projector.
    assert _build("janus")[2].vision_config.num_image_tokens == 4
    assert _build("got_ocr2")[2].image_seq_length == 4  # a 2x2 grid: the tile grew past the 4x downsampling
    pinpoints = _build("llava_onevision")[2].image_grid_pinpoints
    tile = _build("llava_onevision")[2].vision_config.image_size
    assert all(v % tile == 0 and v <= 6 * tile for pair in pinpoints for v in pair)


def test_image_token_is_the_one_the_processor_writes() -> None:
    # Ovis2 finds `<image>` in the prompt but writes <IMG_START><IMG_ATOM>...<IMG_END>.
    _, processor, config = _build("ovis2")
    tokenizer = processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(config.image_token_id) == "<IMG_ATOM>"
    assert "<IMG_START>" in tokenizer.convert_ids_to_tokens(config.visual_indicator_token_ids)
    added = expanded_image_tokens(processor, config)
    assert max(added, key=added.get) == config.image_token_id


def test_an_unexpanded_image_token_is_kept() -> None:
    # Mllama's processor keeps the template's one <|image|> per image and adds only the BOS: the config's
    # image token is in the prompt, and the BOS (the only added token) must not replace it.
    recipe = tiny_recipe("mllama")
    image_token = recipe.tokenizer.convert_tokens_to_ids("<|image|>")
    assert recipe.config.image_token_index == image_token != recipe.tokenizer.bos_token_id


def test_hard_coded_processor_tokens_are_in_the_vocabulary() -> None:
    # Fuyu looks up vocab["|SPEAKER|"] and vocab["|NEWLINE|"]; GOT-OCR2 writes <imgpad> between <img> </img>.
    fuyu = tiny_recipe("fuyu")
    assert fuyu.config.image_token_id == fuyu.tokenizer.convert_tokens_to_ids("|SPEAKER|")
    assert "|NEWLINE|" in fuyu.tokenizer.get_vocab()
    got = tiny_recipe("got_ocr2")
    assert got.config.image_token_id == got.tokenizer.convert_tokens_to_ids("<imgpad>")


def test_mllama_processor_gets_a_bos_token() -> None:
    processor = build_tiny_processor("mllama")
    inputs = _inputs(processor, SIZES[0])
    assert processor.tokenizer.bos_token is not None
    assert "cross_attention_mask" in inputs and "aspect_ratio_ids" in inputs


def test_mm_token_type_ids_requested_by_the_forward_signature() -> None:
    _, processor, config = _build("qwen2_vl")
    processor.return_mm_token_type_ids = False
    _set_flat_defaults(processor, config, model_class_for(config))
    assert "mm_token_type_ids" in _inputs(processor, SIZES[0])
    processor.return_mm_token_type_ids = False
    _set_flat_defaults(processor, config, torch.nn.Module)  # a forward without mm_token_type_ids
    assert "mm_token_type_ids" not in _inputs(processor, SIZES[0])


def test_feature_width_check_names_the_projector_key() -> None:
    # A projector width left at its real size: the features cannot replace 64-wide token embeddings.
    model, processor, config = _build("deepseek_vl")
    check_image_token_agreement(model, processor, SIZES)
    original = model.model.aligner
    model.model.aligner = torch.nn.Sequential(original, torch.nn.Linear(config.text_config.hidden_size, 48))
    try:
        with pytest.raises(ImageTokenMismatchError, match="width 48"):
            check_image_token_agreement(model, processor, SIZES)
    finally:
        model.model.aligner = original


class _InsertsTheImageItself:
    """A processor like Fuyu's: it puts the image in front of the prompt and rejects one already there."""

    image_token = "<image>"

    def __init__(self) -> None:
        self.tokenizer = types.SimpleNamespace(chat_template="user: __IMAGE_TOKEN__ Describe.")
        self.chat_template: str | None = None

    def apply_chat_template(self, messages: object, add_generation_prompt: bool) -> str:
        return self.chat_template or ""

    def __call__(self, text: list[str], images: object, return_tensors: str) -> dict[str, object]:
        if self.image_token in text[0]:
            raise ValueError("found 2 image tokens and 1 image")
        return {}


class _KeepsThePlaceholder(_InsertsTheImageItself):
    """A processor like IDEFICS': it puts the image in front of the prompt itself and keeps a placeholder
    already there as one more image token (which it then counts as a second, missing image)."""

    image_token_id = 7

    def __call__(self, text: list[str], images: object, return_tensors: str) -> dict[str, object]:
        count = 1 + text[0].count(self.image_token)
        return {"input_ids": torch.tensor([[1] + [self.image_token_id] * count + [2]])}


class _ExpandsThePlaceholder(_KeepsThePlaceholder):
    """A processor like PaliGemma's: it expands the placeholder, and inserts the image only without one."""

    def __call__(self, text: list[str], images: object, return_tensors: str) -> dict[str, object]:
        return {"input_ids": torch.tensor([[1] + [self.image_token_id] * 4 + [2]])}


def test_template_placeholder_is_what_the_processor_accepts() -> None:
    config = tiny_recipe("llava").config
    assert text_image_placeholder(_InsertsTheImageItself(), config) == ""
    # Accepted, but left as a stray image token next to the one the processor inserts: none written.
    assert text_image_placeholder(_KeepsThePlaceholder(), config) == ""
    assert text_image_placeholder(_ExpandsThePlaceholder(), config) == "<image>"
    _, processor, config = _build("gemma3")
    # Gemma3 looks for its begin-of-image token in the prompt and writes `tokenizer.image_token` instead.
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert processor.boi_token in prompt
    assert processor.tokenizer.image_token not in prompt


def test_features_without_a_pooled_output_count_the_last_hidden_state_rows() -> None:
    # Llama4's get_image_features returns the vision tower's output (pooler_output None) and projects it row
    # by row in forward: its rows are the image features, its width is not the embedding width.
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from vlmforge.tiny.image_tokens import feature_rows, feature_width

    unpooled = BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 3, 7), pooler_output=None)
    assert feature_rows(unpooled) == 6
    assert feature_width(unpooled) is None
    pooled = BaseModelOutputWithPooling(
        last_hidden_state=torch.zeros(2, 3, 7), pooler_output=torch.zeros(5, 4)
    )
    assert (feature_rows(pooled), feature_width(pooled)) == (5, 4)
