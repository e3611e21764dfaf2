"""Second-round generic rules: decoder-width ties, avoided sizes, tiny processor budgets, VQ vocabularies.

Each test pins one mechanism on the family that needed it (the rule itself never looks at model names):
a wrong or missing rule makes the width, count or class checked here take its real-size or wrong value.
"""

from __future__ import annotations

import functools
import importlib.util
import types
import warnings

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, ProcessorMixin

import vlmforge.tiny as tiny_package
from vlmforge.tiny import (
    TinyVLM,
    build_tiny_model,
    build_tiny_processor,
    check_distinct_sizes,
    model_class_for,
    probe_image_tokens,
    resolve_processor_classes,
    shrink_config,
    tiny_recipe,
)
from vlmforge.tiny.image_tokens import grow_tile_to_token_grid, measured_image_tokens, tie_feature_width
from vlmforge.tiny.processor import (
    _capped_tile_counts,
    _scaled_margins,
    _scaled_pixel_budget,
    _scaled_token_budget,
)
from vlmforge.tiny.recipes import vocabulary_map_tokens

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]


def _forward(
    model: torch.nn.Module, processor: ProcessorMixin, size: tuple[int, int] = (56, 56)
) -> torch.Tensor:
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", size, (90, 140, 200))], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


@functools.cache
def _tiny(source: str) -> TinyVLM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_tiny_model(source)


# ---------------------------------------------------------------------------------------------------------
# Widths tied to the decoder
# ---------------------------------------------------------------------------------------------------------


def test_composite_and_projector_widths_become_the_decoder_width() -> None:
    # PaliGemma states hidden_size, projection_dim and vision_config.projection_dim = the decoder's 2048.
    tiny = shrink_config(AutoConfig.for_model("paligemma"))
    width = tiny.text_config.hidden_size
    assert tiny.hidden_size == tiny.projection_dim == tiny.vision_config.projection_dim == width
    # Ovis2's composite hidden_size (1536) differs from its default decoder (4096): still the joint width.
    assert shrink_config(AutoConfig.for_model("ovis2")).hidden_size == width


def test_clip_projection_dim_keeps_the_encoder_width() -> None:
    # CLIP's projection_dim (768, not the decoder width) is its own embedding space, not the projector output.
    tiny = shrink_config(AutoConfig.for_model("llava"))
    assert tiny.vision_config.projection_dim == tiny.vision_config.hidden_size


def test_unrecognised_projector_width_is_measured_and_tied() -> None:
    # Janus: vision_config.projection_dim (2048) matches no real width of its default config.
    config = tiny_recipe("janus").config
    assert config.vision_config.projection_dim == config.text_config.hidden_size
    assert config.vision_config.hidden_size != config.text_config.hidden_size
    # Undo it: the measurement finds the key again.
    config.vision_config.projection_dim = config.vision_config.hidden_size
    changed = tie_feature_width(config, model_class_for(config))
    assert changed == {"vision_config.projection_dim": (32, 64)}


def test_second_layer_stack_heads_and_tap_widths_shrink() -> None:
    # Mllama's vision tower: `attention_heads`, 8 global layers after the local ones, and a projector input
    # of width * (1 + taps) (7680 = 6 * 1280).
    tiny = shrink_config(AutoConfig.for_model("mllama"))
    vision = tiny.vision_config
    assert vision.hidden_size == 32 and vision.attention_heads == 2
    assert vision.num_global_layers <= 2
    assert vision.vision_output_dim == vision.hidden_size * (len(vision.intermediate_layers_indices) + 1)


@pytest.mark.parametrize("model_type", ["mllama", "molmo2", "lfm2_vl", "llava_onevision"])
def test_forward_with_an_image(model_type: str) -> None:
    tiny = _tiny(model_type)
    logits = _forward(tiny.model, tiny.processor)
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------
# Sizes that must avoid the image-token counts
# ---------------------------------------------------------------------------------------------------------


def test_widths_avoid_the_probe_image_token_counts() -> None:
    # LLaVA-OneVision's 32-wide tower met the 32 image tokens of the 84x56 probe: built once more with the
    # counts avoided, the tower moves to a width that no count takes.
    tiny = _tiny("llava_onevision")
    counts = probe_image_tokens(tiny.processor, tiny.config)
    assert 32 in counts.values()
    assert tiny.config.vision_config.hidden_size not in counts.values()
    check_distinct_sizes(tiny.config, counts)


def test_rebuild_only_for_image_token_clashes() -> None:
    from vlmforge.tiny.model import _clashes_with

    config = tiny_recipe("llava").config
    assert _clashes_with(config, {"56x56": config.text_config.hidden_size})
    assert not _clashes_with(config, {"56x56": 7})


# ---------------------------------------------------------------------------------------------------------
# Processors made tiny
# ---------------------------------------------------------------------------------------------------------


def test_overlap_margins_leave_a_window() -> None:
    # Molmo2: 4 + 4 margin patches of a 27-patch crop; a 2-patch tiny crop needs margins 0 + 0.
    instance = types.SimpleNamespace(
        size={"height": 378, "width": 378}, patch_size=14, overlap_margins=[4, 4]
    )
    assert _scaled_margins(instance, 28) == {"overlap_margins": [0, 0]}
    assert _scaled_margins(instance, 378) == {"overlap_margins": [4, 4]}
    assert _scaled_margins(instance, 14 * 9) == {"overlap_margins": [1, 1]}


def test_dynamic_token_budgets_and_tile_counts_shrink() -> None:
    # LFM2-VL: 64..256 image tokens on 512 px tiles; PerceptionLM: up to 36 tiles.
    lfm2 = types.SimpleNamespace(min_image_tokens=64, max_image_tokens=256, tile_size=512)
    assert _scaled_token_budget(lfm2) == {"min_image_tokens": 4, "max_image_tokens": 16, "tile_size": 128}
    assert _capped_tile_counts(types.SimpleNamespace(max_num_tiles=36, max_tiles=3)) == {"max_num_tiles": 4}
    counts = probe_image_tokens(_tiny("lfm2_vl").processor, _tiny("lfm2_vl").config)
    assert max(counts.values()) <= 16


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="PerceptionLM's tower needs timm")
def test_timm_tower_geometry_reaches_the_processor() -> None:
    # The patch size is only in the architecture name (vit_pe_core_large_patch14_336), the tile size in
    # model_args, the pooling ratio in `projector_pooling_ratio`.
    processor = build_tiny_processor("facebook/Perception-LM-1B")
    config = tiny_recipe("facebook/Perception-LM-1B").config
    assert processor.patch_size == 14
    assert processor.pooling_ratio == config.projector_pooling_ratio
    assert processor.image_processor.tile_size == config.vision_config.model_args["img_size"][0]
    assert processor.image_processor.max_num_tiles == 4


def test_merge_factor_named_downsample_factor_gives_a_token_grid() -> None:
    # Cohere2-Vision: downsample_factor 2 is a merge, so the tile is 4x4 patches -> 2x2 tokens, not 1.
    tiny = _tiny("cohere2_vision")
    assert probe_image_tokens(tiny.processor, tiny.config)["56x56"] == 4


def test_hidden_downsampling_grows_the_tile() -> None:
    # GOT-OCR2's projector downsamples 4x per side by convolutions the config does not state.
    config = tiny_recipe("got_ocr2").config
    assert measured_image_tokens(config, model_class_for(config)) == 4
    config.vision_config.image_size //= 4
    assert grow_tile_to_token_grid(config, model_class_for(config)) == config.vision_config.image_size
    assert measured_image_tokens(config, model_class_for(config)) == 4


def test_processor_of_the_family_a_modular_file_builds_on() -> None:
    # transformers registers no processor for fast_vlm; its modular file builds on LLaVA.
    assert resolve_processor_classes("fast_vlm")["processor"].__name__ == "LlavaProcessor"


# ---------------------------------------------------------------------------------------------------------
# VQ vocabularies
# ---------------------------------------------------------------------------------------------------------


def test_vocabulary_map_tokens_follow_the_modeling_code() -> None:
    named, codes = vocabulary_map_tokens(AutoConfig.for_model("chameleon"), 11)
    assert "<image>" in named
    assert codes[:3] == ["IMGIMGAZ", "IMGIMGBZ", "IMGIMGCZ"] and codes[10] == "IMGIMGBAZ"
    named, codes = vocabulary_map_tokens(AutoConfig.for_model("emu3"), 2)
    assert {"<image>", "<|extra_200|>"} <= set(named)
    assert codes == ["<|visual token 000000|>", "<|visual token 000001|>"]
    assert vocabulary_map_tokens(AutoConfig.for_model("llava"), 4) == ([], [])
    small = AutoConfig.for_model("chameleon")
    small.vq_config.num_embeddings = 5  # a codebook below the tiny cap keeps its size
    assert len(vocabulary_map_tokens(small, 40)[1]) == 5


def test_vocabulary_map_is_the_tiny_vocabulary() -> None:
    recipe = tiny_recipe("chameleon")
    vocabulary_map = recipe.config.vocabulary_map
    assert vocabulary_map == recipe.tokenizer.get_vocab()
    assert vocabulary_map["<image>"] == recipe.config.image_token_id
    assert sum(name.startswith("IMGIMG") for name in vocabulary_map) == recipe.config.vq_config.num_embeddings


def test_conv_vq_encoder_shrinks_to_a_2x2_code_grid() -> None:
    # Chameleon's VQGAN: 512 px, 128 base channels, 5 levels -> 32 px, 2x2 codes; Emu3's middle-block
    # attention works at base * last multiplier channels.
    chameleon = shrink_config(AutoConfig.for_model("chameleon")).vq_config
    assert chameleon.resolution == 2 * 2 ** (len(chameleon.channel_multiplier) - 1)
    assert chameleon.base_channels == 32 and chameleon.num_res_blocks == 1
    emu3 = shrink_config(AutoConfig.for_model("emu3")).vq_config
    assert emu3.hidden_size == emu3.base_channels * emu3.channel_multiplier[-1]


def test_pixel_budgets_shrink_to_a_few_tokens() -> None:
    # Emu3: 512^2..1024^2 pixels of 8x8-pixel tokens -> 4..16 tokens.
    emu3 = types.SimpleNamespace(
        min_pixels=512**2, max_pixels=1024**2, size={"min_pixels": 512**2, "max_pixels": 1024**2}
    )
    scaled = _scaled_pixel_budget(emu3, 8)
    assert scaled["max_pixels"] == 16 * 64 and scaled["min_pixels"] == 4 * 64
    assert scaled["size"] == {"min_pixels": 4 * 64, "max_pixels": 16 * 64}
    assert _scaled_pixel_budget(emu3, None) == {}


@pytest.mark.parametrize("model_type", ["chameleon", "emu3"])
def test_vq_families_forward_with_a_few_image_tokens(model_type: str) -> None:
    tiny = _tiny(model_type)
    counts = probe_image_tokens(tiny.processor, tiny.config)
    assert 0 < max(counts.values()) <= 20  # at most 4x4 codes (Emu3 adds a row separator per row)
    assert torch.isfinite(_forward(tiny.model, tiny.processor)).all()


def test_agreement_names_are_exported() -> None:
    assert {"ImageTokenMismatchError", "check_image_token_agreement"} <= set(tiny_package.__all__)


def test_processor_with_an_audio_front_end_gets_its_feature_extractor() -> None:
    # Gemma3nProcessor takes (feature_extractor, image_processor, tokenizer): it cannot be built without one.
    pytest.importorskip("timm")
    from vlmforge.tiny.recipes import resolve_processor_classes

    classes = resolve_processor_classes("gemma3n")
    assert classes["feature_extractor"].__name__ == "Gemma3nAudioFeatureExtractor"
    assert "feature_extractor" not in resolve_processor_classes("llava")
    processor = tiny_package.build_tiny_processor("gemma3n")
    assert type(processor.feature_extractor) is classes["feature_extractor"]
