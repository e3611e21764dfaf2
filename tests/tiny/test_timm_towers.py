"""Timm-built vision towers named only by an architecture: sizes read from timm, shrunk, geometry measured."""

from __future__ import annotations

import torch

from vlmforge.tiny.image_tokens import feature_rows, image_feature_function, tile_and_patch
from vlmforge.tiny.pipeline import tiny_recipe
from vlmforge.tiny.shrink import timm_model_kwargs


def test_timm_model_kwargs_reads_the_sizes_inside_the_entry_point() -> None:
    # fastvit_mci3's five stages are written in timm's entry point, not in any config.
    model_cls, kwargs = timm_model_kwargs("fastvit_mci3", {"inference_mode": True})
    assert model_cls.__name__ == "FastVit"
    assert tuple(kwargs["embed_dims"]) == (96, 192, 384, 768, 1536)
    assert tuple(kwargs["layers"]) == (2, 12, 24, 4, 2)
    assert kwargs["inference_mode"] is True


def test_staged_timm_tower_is_shrunk_and_its_geometry_stated() -> None:
    vision = tiny_recipe("fast_vlm").config.vision_config
    args = vision.model_args
    assert max(args["embed_dims"]) <= 64 and len(args["embed_dims"]) == 5
    assert args["layers"] == [1] * 5
    import timm

    with torch.device("meta"):
        tower = timm.create_model(vision.architecture, pretrained=False, **args)
    # The projector reads `hidden_size` features; the processor cuts `patch_size` patches.
    assert vision.hidden_size == tower.num_features
    assert vision.patch_size == tower.feature_info[-1]["reduction"] == 64
    assert vision.image_size == 2 * vision.patch_size


def test_tiny_fast_vlm_makes_the_image_tokens_its_geometry_says() -> None:
    from vlmforge.tiny import build_tiny_model

    bundle = build_tiny_model("fast_vlm")
    side, patch = tile_and_patch(bundle.model.config)
    assert side is not None and patch is not None
    features = image_feature_function(bundle.model)(torch.zeros(1, 3, side, side))
    assert feature_rows(features) == (side // patch) ** 2 == bundle.model.config.image_seq_length
    assert sum(p.numel() for p in bundle.model.parameters()) < 2_000_000


def test_timm_width_multipliers_follow_the_entry_point_into_its_builder() -> None:
    from vlmforge.tiny.shrink import timm_width_multipliers

    # mobilenetv5_300m_enc(pretrained, **kwargs) forwards to _gen_mobilenet_v5(..., channel_multiplier=1.0).
    assert timm_width_multipliers("mobilenetv5_300m_enc") == ["channel_multiplier"]
    # A ViT entry point scales through explicit sizes, not a multiplier.
    assert timm_width_multipliers("vit_base_patch16_224") == []


def test_block_string_timm_tower_is_narrowed_by_its_multiplier_and_outputs_the_tiny_grid() -> None:
    # Gemma3n's MobileNetV5 writes its widths in block strings and states no model_args (None).
    config = tiny_recipe("gemma3n").config
    vision, args = config.vision_config, config.vision_config.model_args
    assert 0 < args["channel_multiplier"] < 0.1
    assert args["msfa_output_resolution"] == vision.image_size // vision.patch_size == 2
    import timm

    with torch.device("meta"):
        tower = timm.create_model(vision.architecture, pretrained=False, **args)
    assert max(info["num_chs"] for info in tower.feature_info) <= 64
    assert vision.hidden_size == tower.num_features
    # The composite config's count of soft tokens follows the fused grid (the model reshapes to it).
    assert config.vision_soft_tokens_per_image == 4
