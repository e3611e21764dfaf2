"""Real HF processors, made small enough for tiny models.

How to make a processor small is knowledge about the *processor / image-processor class* (a Qwen2-VL image
processor is sized in pixels, an Idefics3 one by its longest edge...), so recipes are keyed by class name:
every family that reuses a class (Qwen2-VL, Qwen2.5-VL and Qwen3-VL all use ``Qwen2VLImageProcessor``) reuses
its recipe, and a class without a recipe falls back to a generic one driven by its ``size`` convention.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

from .pipeline import tiny_recipe
from .recipes import CHATML_IMAGE_PLACEHOLDER, resolve_processor_classes
from .shrink import LATENT_COUNT_KEYS

__all__ = ["build_tiny_processor", "processor_for_config"]

Recipe = Callable[[PretrainedConfig], dict[str, Any]]


def _vision(config: PretrainedConfig) -> PretrainedConfig:
    return getattr(config, "vision_config", None) or config


def _dynamic_resolution(config: PretrainedConfig) -> tuple[int, int, dict[str, int]]:
    """Pixel budget of 2x2 .. 4x4 merged patches, i.e. 4 to 16 image tokens per image."""
    vision = _vision(config)
    patch, merge = vision.patch_size, vision.spatial_merge_size
    unit = patch * merge
    geometry = {"patch_size": patch, "merge_size": merge, "temporal_patch_size": vision.temporal_patch_size}
    return (2 * unit) ** 2, (4 * unit) ** 2, geometry


def _dynamic_resolution_images(config: PretrainedConfig) -> dict[str, Any]:
    min_pixels, max_pixels, geometry = _dynamic_resolution(config)
    return {"min_pixels": min_pixels, "max_pixels": max_pixels, **geometry}


def _dynamic_resolution_videos(config: PretrainedConfig) -> dict[str, Any]:
    min_pixels, max_pixels, geometry = _dynamic_resolution(config)
    # cap_pixels_per_frame=True is the announced future default; setting it silences the deprecation warning.
    return {
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "cap_pixels_per_frame": True,
        **geometry,
    }


def _resize_then_center_crop(config: PretrainedConfig) -> dict[str, Any]:
    side = _vision(config).image_size
    return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}


def _square_resize(config: PretrainedConfig) -> dict[str, Any]:
    side = _vision(config).image_size
    return {"size": {"height": side, "width": side}}


def _split_into_tiles(config: PretrainedConfig) -> dict[str, Any]:
    # Tiles of the vision tower's image_size; images up to 2 tiles per side, so a typical test image is split
    # into a 2x2 grid + a global view: 5 sub-images whose image tokens are not contiguous in the prompt.
    side = _vision(config).image_size
    return {"size": {"longest_edge": 2 * side}, "max_image_size": {"longest_edge": side}}


def _tiles_seq_len(config: PretrainedConfig) -> dict[str, Any]:
    vision = _vision(config)
    return {"image_seq_len": (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2}


def _clip_cls_token(config: PretrainedConfig) -> dict[str, Any]:
    # CLIP towers prepend a CLS embedding; the "default" feature strategy drops it again.
    return {"num_additional_image_tokens": 1}


IMAGE_PROCESSOR_RECIPES: dict[str, Recipe] = {
    "Qwen2VLImageProcessor": _dynamic_resolution_images,
    "LlavaImageProcessor": _resize_then_center_crop,
    "CLIPImageProcessor": _resize_then_center_crop,
    "Idefics3ImageProcessor": _split_into_tiles,
    "SmolVLMImageProcessor": _split_into_tiles,
    "SiglipImageProcessor": _square_resize,
}
VIDEO_PROCESSOR_RECIPES: dict[str, Recipe] = {
    "Qwen2VLVideoProcessor": _dynamic_resolution_videos,
    "Qwen3VLVideoProcessor": _dynamic_resolution_videos,
}
PROCESSOR_RECIPES: dict[str, Recipe] = {
    "LlavaProcessor": _clip_cls_token,
    "LlavaNextProcessor": _clip_cls_token,
    "LlavaOnevisionProcessor": _clip_cls_token,
    "Idefics3Processor": _tiles_seq_len,
    "SmolVLMProcessor": _tiles_seq_len,
}


def _recipe(table: dict[str, Recipe], cls: type) -> Recipe | None:
    # The PIL and torchvision backends of an image processor share their sizing conventions.
    name = cls.__name__.removesuffix("Fast").removesuffix("Pil")
    return table.get(name)


def _generic_component_kwargs(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Fallback for a class without a recipe: follow its ``size`` convention and its patch attributes."""
    vision = _vision(config)
    kwargs: dict[str, Any] = {}
    side = getattr(vision, "image_size", None)
    size = getattr(cls, "size", None)
    if isinstance(side, int) and isinstance(size, dict):
        if {"height", "width"} <= size.keys():
            kwargs["size"] = {"height": side, "width": side}
        elif "shortest_edge" in size or "longest_edge" in size:
            kwargs["size"] = {key: side for key in size}
        if isinstance(getattr(cls, "crop_size", None), dict):
            kwargs["crop_size"] = {"height": side, "width": side}
    for attribute, source in (
        ("patch_size", "patch_size"),
        ("merge_size", "spatial_merge_size"),
        ("temporal_patch_size", "temporal_patch_size"),
    ):
        if hasattr(cls, attribute) and isinstance(getattr(vision, source, None), int):
            kwargs[attribute] = getattr(vision, source)
    return kwargs


def _latent_count(config: PretrainedConfig) -> int | None:
    """Image tokens per image of a learned-query resampler (in any sub-config), if the model has one."""
    for key in config.sub_configs:
        sub_config = getattr(config, key, None)
        if isinstance(sub_config, PretrainedConfig):
            count = next((getattr(sub_config, k) for k in LATENT_COUNT_KEYS if hasattr(sub_config, k)), None)
            if isinstance(count, int):
                return count
    return None


def _generic_processor_kwargs(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Processor ``__init__`` arguments mirroring config fields (patch size, feature strategy, seq length)."""
    vision = _vision(config)
    # The shrinker cuts a resampler's latent count; its processor must expand the image token to match.
    seq_length = getattr(config, "image_seq_length", None) or _latent_count(config)
    sources = {
        "patch_size": getattr(vision, "patch_size", None),
        "vision_feature_select_strategy": getattr(config, "vision_feature_select_strategy", None),
        "image_seq_len": seq_length,
        "image_seq_length": seq_length,
        "num_image_tokens": seq_length,
    }
    parameters = inspect.signature(cls.__init__).parameters
    return {name: value for name, value in sources.items() if name in parameters and value is not None}


def _component(cls: type, table: dict[str, Recipe], config: PretrainedConfig) -> Any:
    recipe = _recipe(table, cls)
    kwargs = recipe(config) if recipe else _generic_component_kwargs(cls, config)
    return cls(**kwargs)


def processor_for_config(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The HF processor of ``config.model_type``, sized for the (already tiny) ``config``.

    The chat template is the tokenizer's (see :func:`build_tiny_tokenizer`).
    """
    classes = resolve_processor_classes(config.model_type)
    processor_cls = classes["processor"]
    kwargs: dict[str, Any] = {"tokenizer": tokenizer}
    if "chat_template" in inspect.signature(processor_cls.__init__).parameters:
        kwargs["chat_template"] = tokenizer.chat_template
    if "image_processor" in classes:
        kwargs["image_processor"] = _component(classes["image_processor"], IMAGE_PROCESSOR_RECIPES, config)
    if "video_processor" in classes:
        kwargs["video_processor"] = _component(classes["video_processor"], VIDEO_PROCESSOR_RECIPES, config)
    kwargs.update(_generic_processor_kwargs(processor_cls, config))
    recipe = _recipe(PROCESSOR_RECIPES, processor_cls)
    if recipe is not None:
        kwargs.update(recipe(config))
    processor = processor_cls(**kwargs)
    template = tokenizer.chat_template
    if isinstance(template, str) and CHATML_IMAGE_PLACEHOLDER in template:
        # Generic template: its image slot becomes the token this processor expands in text.
        image_token = getattr(processor, "image_token", None) or "<image>"
        filled = template.replace(CHATML_IMAGE_PLACEHOLDER, image_token)
        tokenizer.chat_template = filled
        processor.chat_template = filled
    return processor


def build_tiny_processor(
    model_type_or_config: str | PretrainedConfig,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
) -> ProcessorMixin:
    """A real processor of the family's HF class, with a tiny tokenizer and small image sizes.

    Args:
        model_type_or_config: without ``tokenizer``, a model_type, a stored checkpoint id or a real config;
            the processor then matches ``build_tiny_model(model_type_or_config, seed=seed)``. With
            ``tokenizer``, the already-shrunk config the processor must agree with.
        tokenizer: the tiny tokenizer to use (see above).
        seed: tokenizer seed when the tokenizer is built here.
    """
    if tokenizer is None:
        recipe = tiny_recipe(model_type_or_config, seed=seed)
        return processor_for_config(recipe.config, recipe.tokenizer)
    if not isinstance(model_type_or_config, PretrainedConfig):
        raise TypeError("with an explicit tokenizer, pass the tiny config the processor must agree with")
    return processor_for_config(model_type_or_config, tokenizer)
