"""Generic shrinking rules (field names, never model names) on families beyond the four core ones.

Each test shrinks a real or default config and checks a property that a wrong rule breaks: the config
builds (config classes validate themselves), no two sizes coincide, M-RoPE sections fill the rotary half,
pooling strides stay >= 1, patch-count tables name the tiny grid. Most build on the meta device only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch
from transformers import AutoConfig, PretrainedConfig

from vlmforge.tiny import (
    ShrinkLimits,
    check_distinct_sizes,
    load_reference_config,
    model_class_for,
    shrink_config,
    tiny_recipe,
)
from vlmforge.tiny.dimensions import DimensionCoincidenceError
from vlmforge.tiny.shrink import (
    DEFAULT_LIMITS,
    MissingBackboneError,
    _hardcoded_mrope_section,
    require_backbone_packages,
)

# Families whose default config shrank into coinciding sizes or an invalid config before the generic rules.
FAMILIES = ["mistral3", "gemma3", "lfm2_vl", "qwen3_5_moe", "molmo2", "aya_vision"]


def _shrunk(model_type: str, limits: ShrinkLimits = DEFAULT_LIMITS) -> PretrainedConfig:
    """The tiny config the factory builds: tiny vocabulary and token ids from the tiny tokenizer."""
    return tiny_recipe(model_type, limits=limits).config


def _meta_model(config: PretrainedConfig) -> torch.nn.Module:
    with torch.device("meta"):
        return model_class_for(config)._from_config(config)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_shrunk_config_builds_with_distinct_sizes(model_type: str) -> None:
    config = _shrunk(model_type)
    check_distinct_sizes(config)
    model = _meta_model(config)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_moe_sizes_are_ffn_sizes_distinct_from_every_width() -> None:
    config = _shrunk("qwen3_5_moe")
    text = config.text_config
    kv_width = text.num_key_value_heads * text.head_dim
    ffns = {text.moe_intermediate_size, text.shared_expert_intermediate_size}
    assert len(ffns) == 2  # routed and shared experts must not be interchangeable
    assert not ffns & {kv_width, text.hidden_size, config.vision_config.hidden_size}
    assert config.vision_config.hidden_size != kv_width


def test_equal_moe_sizes_are_a_coincidence() -> None:
    config = _shrunk("qwen3_5_moe")
    config.text_config.shared_expert_intermediate_size = config.text_config.moe_intermediate_size
    with pytest.raises(DimensionCoincidenceError, match=r"moe_intermediate_size == text\.shared_expert"):
        check_distinct_sizes(config)


def test_partial_rotary_inside_rope_parameters_sizes_the_mrope_section() -> None:
    # Qwen3.5 keeps partial_rotary_factor in rope_parameters and hard-codes the section [11, 11, 10] in its
    # modeling file: the tiny head_dim must leave each of the 3 sections at least one rotary pair.
    assert _hardcoded_mrope_section(type(AutoConfig.for_model("qwen3_5_moe").text_config)) == (11, 11, 10)
    text = _shrunk("qwen3_5_moe").text_config
    factor = text.rope_parameters["partial_rotary_factor"]
    assert factor == 0.25
    section = text.rope_parameters["mrope_section"]
    assert len(section) == 3 and min(section) >= 1
    assert sum(section) == int(text.head_dim * factor) // 2


# paddleocr_vl: the section exists only as the modeling file's fallback; glm4v_moe: head_dim = width // heads
# with a partial rotary factor of 0.5, so the width must grow for 3 sections to fit.
@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "qwen3_vl", "paddleocr_vl", "glm4v_moe"])
def test_mrope_sections_fill_the_rotary_half(model_type: str) -> None:
    config = _shrunk(model_type)
    text = config.get_text_config(decoder=True)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    factor = text.rope_parameters.get("partial_rotary_factor", getattr(text, "partial_rotary_factor", 1.0))
    section = text.rope_parameters["mrope_section"]
    assert min(section) >= 1
    assert sum(section) == int(head_dim * factor) // 2
    assert "mrope_section" not in (config.vision_config.rope_parameters or {})
    _meta_model(config)


def test_pooled_tokens_per_image_stay_consistent_with_the_patch_grid() -> None:
    config = _shrunk("gemma3")
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    side = round(config.mm_tokens_per_image**0.5)
    assert side * side == config.mm_tokens_per_image == 9  # not a power of two, unlike every width
    assert grid % side == 0 and grid // side == 2  # the real pooling is kept, the stride is not 0
    model = model_class_for(config)._from_config(config).eval()
    pixels = torch.zeros(1, 3, vision.image_size, vision.image_size)
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=pixels)
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    assert features.shape[-2] == 9


@pytest.mark.parametrize(
    ("model_type", "image_tokens"),
    [("mistral3", {"56x56": 16, "84x56": 12}), ("lfm2_vl", {"56x56": 64, "84x56": 70})],
)
def test_avoid_sizes_moves_widths_off_image_token_counts(model_type: str, image_tokens: dict) -> None:
    with pytest.raises(DimensionCoincidenceError):
        check_distinct_sizes(_shrunk(model_type), image_tokens)
    limits = replace(DEFAULT_LIMITS, avoid_sizes=tuple(image_tokens.values()))
    config = _shrunk(model_type, limits=limits)
    check_distinct_sizes(config, image_tokens)
    _meta_model(config)


def test_layer_taps_in_a_sub_config_index_the_shrunk_tower() -> None:
    config = _shrunk("molmo2")  # Molmo2's config class validates the taps against the vision depth
    depth = config.vision_config.num_hidden_layers
    taps = config.adapter_config.vision_feature_layer
    assert len(taps) == 2 and len(set(taps)) == 2
    assert all(-depth <= t < depth for t in taps)
    grid = config.vision_config.image_size[0] // config.vision_config.patch_size
    assert config.vision_config.num_position_embeddings == grid * grid


def test_patch_count_dict_is_keyed_by_the_tiny_patch_counts() -> None:
    config = _shrunk("aria")
    table = config.projector_patch_to_query_dict
    grid = config.vision_config.image_size // config.vision_config.patch_size
    assert max(table) == grid * grid
    assert max(table.values()) == DEFAULT_LIMITS.resampler_latents
    assert list(table.values()) == sorted(table.values())  # the larger image keeps more queries


def test_channel_lists_and_equal_sized_fields_follow_the_widths() -> None:
    real = AutoConfig.for_model("unlimited_ocr")
    sam = shrink_config(real).vision_config.sam_config
    assert all(c <= 64 and c % 8 == 0 for c in sam.downsample_channels)
    assert len(sam.downsample_channels) == len(real.vision_config.sam_config.downsample_channels)
    lfm2 = _shrunk("lfm2_vl")
    assert lfm2.projector_hidden_size == lfm2.text_config.hidden_size  # real: both 2560


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    config = AutoConfig.for_model("perception_lm")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else find_spec(name, *a)
    )
    with pytest.raises(MissingBackboneError, match=r'pip install "vlmforge\[timm\]"') as error:
        require_backbone_packages(config)
    assert "vision_config" in str(error.value)
    require_backbone_packages(AutoConfig.for_model("llava"))  # no timm tower: nothing to require


def test_timm_tower_is_shrunk_through_its_model_args() -> None:
    pytest.importorskip("timm")
    config = _shrunk("facebook/Perception-LM-1B")
    args = config.vision_config.model_args
    # Every size timm would otherwise take from the architecture's defaults is explicit and tiny.
    assert (args["embed_dim"], args["num_heads"], args["depth"]) == (32, 2, 2)
    grid = 2 * config.projector_pooling_ratio  # 2x2 image tokens per tile after the 2x2 pooling
    assert args["img_size"] == [14 * grid] * 2 and args["ref_feat_shape"] == [grid] * 2
    model = model_class_for(config)._from_config(config).eval()
    with torch.no_grad():
        features = model.model.vision_tower(torch.zeros(1, 3, 14 * grid, 14 * grid)).last_hidden_state
    assert features.shape[-1] == 32 and features.shape[-2] >= grid * grid


@pytest.mark.parametrize(
    ("checkpoint", "billions"), [("CohereForAI/aya-vision-8b", 8.63), ("facebook/Perception-LM-1B", 1.53)]
)
def test_added_reference_configs_build_at_their_size(checkpoint: str, billions: float) -> None:
    if "Perception" in checkpoint:
        pytest.importorskip("timm")
    model = _meta_model(load_reference_config(checkpoint))
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.005)
    tiny = _shrunk(checkpoint)
    check_distinct_sizes(tiny)
    _meta_model(tiny)


def test_shared_kv_tail_keeps_every_layer_type_before_it() -> None:
    pytest.importorskip("timm")  # Gemma3n's vision tower is a timm MobileNetV5
    text = _shrunk("gemma3n").text_config
    modes = text.kv_sharing_modes  # raises when a shared layer's type has no producer before the tail
    tail = text.num_kv_shared_layers
    assert 1 <= tail < text.num_hidden_layers
    assert modes[-tail:] == ["reuse"] * tail
    assert set(text.layer_types[:-tail]) == set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert text.vocab_size_per_layer_input <= text.vocab_size  # per-layer tables cut to the tiny vocabulary


def test_vocabulary_map_becomes_the_tiny_vocabulary() -> None:
    # Chameleon finds its image token and VQ-code tokens through `vocabulary_map`, which the default config
    # leaves None (the model cannot be built) and a real config fills with 65536 real ids.
    vocabulary = {"<image>": 7, "IMGIMGAZ": 8, "IMGIMGBZ": 9, "hello": 10}
    config = shrink_config(AutoConfig.for_model("chameleon"), vocab_size=400, vocabulary=vocabulary)
    assert config.vocabulary_map == vocabulary
    assert config.vq_config.num_embeddings == DEFAULT_LIMITS.codebook_size  # each code is a tiny token
    model = _meta_model(config)
    assert model.model.vocabulary_mapping.image_token_id == 7
    real_map = {"<image>": 8711, "IMGIMGAZ": 4, "big": 65000}
    config.vocabulary_map = real_map
    cut = shrink_config(config, vocab_size=400)
    assert cut.vocabulary_map == {"IMGIMGAZ": 4}  # ids outside the tiny vocabulary are dropped


def test_prefixed_stack_and_per_layer_ffn_lists_are_shrunk() -> None:
    pytest.importorskip("timm")  # Gemma3n's vision tower is timm-built
    from vlmforge.tiny.shrink import shrink_config

    config = shrink_config(AutoConfig.for_model("gemma3n"))
    # The audio conformer names its stack conf_num_hidden_layers / conf_num_attention_heads.
    audio = config.audio_config
    assert audio.conf_num_hidden_layers <= 2 and audio.conf_num_attention_heads <= 4
    assert audio.hidden_size <= 64
    # A per-layer list of FFN widths scales entry by entry with the width.
    text = config.text_config
    assert isinstance(text.intermediate_size, list) and len(text.intermediate_size) == text.num_hidden_layers
    assert all(width <= 4 * text.hidden_size for width in text.intermediate_size)
