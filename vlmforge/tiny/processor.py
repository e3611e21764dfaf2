"""Real HF processors, made small enough for tiny models.

How to make a processor small is knowledge about the *processor / image-processor class* (a Qwen2-VL image
processor is sized in pixels, an Idefics3 one by its longest edge...), so recipes are keyed by class name:
every family that reuses a class (Qwen2-VL, Qwen2.5-VL and Qwen3-VL all use ``Qwen2VLImageProcessor``) reuses
its recipe, and a class without a recipe falls back to a generic one driven by its ``size`` convention.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

from .image_tokens import (
    geometric_image_tokens,
    image_count_keys,
    image_tokens_per_image,
    measured_image_tokens,
    merge_factor,
    square_side,
    tile_and_patch,
    vision_config,
    vision_prefix_tokens,
)
from .pipeline import tiny_recipe
from .recipes import CHATML_IMAGE_PLACEHOLDER, resolve_processor_classes

__all__ = ["build_tiny_processor", "processor_for_config"]

Recipe = Callable[[PretrainedConfig], dict[str, Any]]


def _dynamic_resolution(config: PretrainedConfig) -> tuple[int, int, dict[str, int]]:
    """Pixel budget of 2x2 .. 4x4 merged patches, i.e. 4 to 16 image tokens per image."""
    vision = vision_config(config)
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
    side, _ = tile_and_patch(config)
    return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}} if side else {}


def _square_resize(config: PretrainedConfig) -> dict[str, Any]:
    side, _ = tile_and_patch(config)
    return {"size": {"height": side, "width": side}} if side else {}


def _split_into_tiles(config: PretrainedConfig) -> dict[str, Any]:
    # Tiles of the vision tower's image_size; images up to 2 tiles per side, so a typical test image is split
    # into a 2x2 grid + a global view: 5 sub-images whose image tokens are not contiguous in the prompt.
    side = vision_config(config).image_size
    return {"size": {"longest_edge": 2 * side}, "max_image_size": {"longest_edge": side}}


def _tiles_seq_len(config: PretrainedConfig) -> dict[str, Any]:
    return {"image_seq_len": geometric_image_tokens(config)}


def _merged_grid_side(config: PretrainedConfig) -> dict[str, Any]:
    # Cohere2-Vision's image processor calls the side of a tile's *merged* token grid its `patch_size` (16 for
    # 512 px tiles, 16 px patches and a 2x2 downsample): the processor writes patch_size**2 tokens per tile.
    vision = vision_config(config)
    side = square_side(vision.image_size) // (square_side(vision.patch_size) * merge_factor(config))
    return {
        "size": {"height": square_side(vision.image_size), "width": square_side(vision.image_size)},
        "patch_size": side,
    }


IMAGE_PROCESSOR_RECIPES: dict[str, Recipe] = {
    "Qwen2VLImageProcessor": _dynamic_resolution_images,
    "LlavaImageProcessor": _resize_then_center_crop,
    "CLIPImageProcessor": _resize_then_center_crop,
    "Idefics3ImageProcessor": _split_into_tiles,
    "SmolVLMImageProcessor": _split_into_tiles,
    "SiglipImageProcessor": _square_resize,
    "Cohere2VisionImageProcessor": _merged_grid_side,
}
VIDEO_PROCESSOR_RECIPES: dict[str, Recipe] = {
    "Qwen2VLVideoProcessor": _dynamic_resolution_videos,
    "Qwen3VLVideoProcessor": _dynamic_resolution_videos,
}
PROCESSOR_RECIPES: dict[str, Recipe] = {
    "Idefics3Processor": _tiles_seq_len,
    "SmolVLMProcessor": _tiles_seq_len,
}

# Names under which processors take the image-token count of one image or tile (__init__ or call default).
_PROCESSOR_COUNT_NAMES = ("image_seq_len", "image_seq_length", "num_image_tokens")


def _recipe(table: dict[str, Recipe], cls: type) -> Recipe | None:
    """The recipe of ``cls`` or of its nearest base class that has one.

    A subclass keeps its parent's size convention (a family that subclasses ``LlavaProcessor`` or
    ``SiglipImageProcessor`` without changing how it sizes images), and the PIL and torchvision backends of an
    image processor share theirs.
    """
    for base in cls.__mro__:
        name = base.__name__.removesuffix("Fast").removesuffix("Pil")
        if name in table:
            return table[name]
    return None


def _size_dict(value: object) -> dict[str, int] | None:
    """The set fields of a size dict (``SizeDict`` or a plain dict), or None if ``value`` is not one."""
    if hasattr(value, "__dataclass_fields__"):
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if v is not None}


def _resized(size: dict[str, int], side: int) -> dict[str, int] | None:
    if {"height", "width"} <= size.keys():
        return {"height": side, "width": side}
    edges = {key: side for key in ("shortest_edge", "longest_edge") if key in size}
    return edges or None


def _defaults(cls: type) -> Any:
    """A default instance of ``cls``: many processors keep their defaults on the instance, not the class."""
    try:
        return cls()
    except Exception:  # a class that needs arguments: fall back to its class attributes
        return cls


def _generic_component_kwargs(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Fallback for a class without a recipe: resize every size field of its default instance to the tower.

    ``size``/``crop_size``/``max_image_size`` follow the vision tower's ``image_size``; a ``<name>_size``
    field follows ``<name>_vision_config`` when the model has that second tower (DeepSeek-VL-Hybrid's
    ``high_res_size``); patch/merge attributes and the any-resolution grid follow the config.
    """
    vision = vision_config(config)
    instance = _defaults(cls)
    tile, patch = tile_and_patch(config)
    kwargs: dict[str, Any] = {}
    default_side = square_side((_size_dict(getattr(instance, "size", None)) or {}).get("height"))
    for name in dir(instance):
        if not name.endswith("size") or name.startswith("_") or name in ("patch_size", "pad_size"):
            continue
        value = getattr(instance, name, None)
        size = _size_dict(value)
        tower = getattr(config, f"{name.removesuffix('_size')}_vision_config", None)
        side = square_side(getattr(tower, "image_size", None)) if tower is not None else tile
        if size and side and (resized := _resized(size, side)):
            kwargs[name] = resized
        elif side and isinstance(value, int) and not isinstance(value, bool) and value == default_side:
            # A tile side in pixels next to `size` (PerceptionLM's tile_size 448): the tower's image size.
            kwargs[name] = side
    kwargs.update(_scaled_margins(instance, tile))
    kwargs.update(_scaled_token_budget(instance))
    kwargs.update(_capped_tile_counts(instance))
    kwargs.update(_scaled_pixel_budget(instance, patch))
    patch_attribute = getattr(instance, "patch_size", None)
    if patch and (patch_size := _size_dict(patch_attribute)):
        kwargs["patch_size"] = {key: patch for key in patch_size}
    for attribute, source in (
        ("patch_size", "patch_size"),
        ("merge_size", "spatial_merge_size"),
        ("temporal_patch_size", "temporal_patch_size"),
    ):
        if (
            attribute not in kwargs
            and hasattr(instance, attribute)
            and isinstance(getattr(vision, source, None), int)
        ):
            kwargs[attribute] = getattr(vision, source)
    return kwargs


def _scaled_margins(instance: Any, side: int | None) -> dict[str, list[int]]:
    """Overlap margins (in patches) of a cropping processor, scaled from its default crop to the tiny one.

    Molmo2 cuts an image into crops overlapping by ``overlap_margins`` patches (4 + 4 of a 27-patch crop);
    the window between the margins of a 2-patch tiny crop would be negative ("step is -84"). The margins
    keep their share of the crop, rounded down, and always leave a window of at least one patch.
    """
    size = _size_dict(getattr(instance, "size", None)) or {}
    real = size.get("height") if size.get("height") == size.get("width") else None
    patch = getattr(instance, "patch_size", None)
    if not (real and side and isinstance(patch, int) and patch > 0):
        return {}
    real_patches, tiny_patches = real // patch, side // patch
    scaled = {}
    for name in dir(instance):
        values = (
            getattr(instance, name, None) if name.endswith("margins") and not name.startswith("_") else None
        )
        if not (isinstance(values, list | tuple) and values and all(isinstance(v, int) for v in values)):
            continue
        margins = [v * tiny_patches // real_patches for v in values]
        while sum(margins) >= tiny_patches and any(margins):
            margins[margins.index(max(margins))] -= 1
        scaled[name] = margins
    return scaled


# Tiles (crops) per image: enough that tiling code runs with several tiles, few enough to stay tiny.
_MAX_TILES = 4
_TILE_COUNT = re.compile(r"^max_(num_)?(tiles|crops)$")


def _capped_tile_counts(instance: Any) -> dict[str, int]:
    """``max_num_tiles`` / ``max_tiles`` / ``max_crops`` capped at :data:`_MAX_TILES`.

    Tiling processors cut an image into up to 36 tiles (PerceptionLM), each a full image for the tower; a
    tiny model only needs to see that several tiles are handled.
    """
    capped = {}
    for name in dir(instance):
        value = getattr(instance, name, None) if _TILE_COUNT.match(name) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_TILES:
            capped[name] = _MAX_TILES
    return capped


# Most image tokens a tiny dynamic-resolution image may become: a 4x4 merged grid (as _dynamic_resolution).
_TINY_MAX_IMAGE_TOKENS = 16


def _scaled_token_budget(instance: Any) -> dict[str, int]:
    """Image-token budgets of a dynamic-resolution processor (``min/max_image_tokens``), made tiny.

    LFM2-VL resizes an image to between 64 and 256 image tokens and tiles large ones into 512 px tiles of
    256 tokens; a tiny model fed 64+ tokens per image spends its forward on the image, and the counts
    (64, 256) are the powers of two the widths are. The budgets keep their ratio with the largest at
    ``_TINY_MAX_IMAGE_TOKENS``; a ``tile_size`` in pixels shrinks by the same factor per side.
    """
    budgets = {
        name: value
        for name in dir(instance)
        if name.endswith("_image_tokens")
        and not name.startswith("_")
        and isinstance(value := getattr(instance, name, None), int)
        and not isinstance(value, bool)
        and value > 0
    }
    if not budgets or max(budgets.values()) <= _TINY_MAX_IMAGE_TOKENS:
        return {}
    factor = _TINY_MAX_IMAGE_TOKENS / max(budgets.values())
    scaled: dict[str, int] = {name: max(1, round(value * factor)) for name, value in budgets.items()}
    tile = getattr(instance, "tile_size", None)
    if isinstance(tile, int) and not isinstance(tile, bool):
        scaled["tile_size"] = max(1, round(tile * math.sqrt(factor)))
    return scaled


def _scaled_pixel_budget(instance: Any, patch: int | None) -> dict[str, Any]:
    """``min_pixels``/``max_pixels`` of a dynamic-resolution processor without a recipe, made tiny.

    Emu3 resizes images to between 512^2 and 1024^2 pixels, i.e. 4096+ image tokens of 8x8 pixels. The
    largest budget becomes ``_TINY_MAX_IMAGE_TOKENS`` tokens of ``patch`` pixels per side (the pixels one
    image token covers), the smallest keeps its ratio to it (at least one token); a ``size`` dict stating
    the budgets follows.
    """
    low, high = getattr(instance, "min_pixels", None), getattr(instance, "max_pixels", None)
    if not (patch and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (low, high))):
        return {}
    tiny_high = _TINY_MAX_IMAGE_TOKENS * patch * patch
    if high <= tiny_high:
        return {}
    tiny_low = max(patch * patch, round(low * tiny_high / high))
    scaled: dict[str, Any] = {"min_pixels": tiny_low, "max_pixels": tiny_high}
    size = _size_dict(getattr(instance, "size", None))
    if size and {"min_pixels", "max_pixels"} <= size.keys():
        scaled["size"] = {**size, "min_pixels": tiny_low, "max_pixels": tiny_high}
    return scaled


def _config_mirrors(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Image-processor fields that restate a config field, for every class (with or without a size recipe)."""
    instance = _defaults(cls)
    kwargs: dict[str, Any] = {}
    if hasattr(instance, "image_grid_pinpoints") and getattr(config, "image_grid_pinpoints", None):
        # The model tiles by config.image_grid_pinpoints; the processor must choose among the same grids.
        kwargs["image_grid_pinpoints"] = config.image_grid_pinpoints
    if hasattr(instance, "image_seq_length") and (count := image_tokens_per_image(config)):
        kwargs["image_seq_length"] = count  # PaliGemma's processor reads it from its image processor
    return kwargs


def _accepted(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs an image/video processor accepts (named parameters or declared valid kwargs)."""
    parameters = inspect.signature(cls.__init__).parameters
    valid = set(getattr(cls, "valid_kwargs", {}).__annotations__) if hasattr(cls, "valid_kwargs") else set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()) and not valid:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters or k in valid}


# Processor parameters named differently from the config key they restate.
_PARAMETER_ALIASES = {"img_size": "image_size"}
_NOT_MIRRORED = {"self", "image_processor", "tokenizer", "video_processor", "chat_template", "kwargs"}


def _mirrored_config_values(
    parameters: Mapping[str, inspect.Parameter], config: PretrainedConfig
) -> dict[str, Any]:
    """Processor ``__init__`` parameters named like a config key (of the model or its vision tower).

    A processor parameter that shares its name with a config key restates it (Pixtral's
    ``spatial_merge_size``, Aya-Vision's ``downsample_factor`` and ``img_size``); its default is the real
    checkpoint's value, so it must follow the tiny config. Token strings are not mirrored (the tokenizer
    provides them).
    """
    mirrored: dict[str, Any] = {}
    for name in parameters:
        if name in _NOT_MIRRORED or name.endswith("_token"):
            continue
        key = _PARAMETER_ALIASES.get(name, name)
        for node in (config, vision_config(config)):
            value = getattr(node, key, None)
            if value is None:
                # A config key that qualifies the parameter's name (PerceptionLM's pooling_ratio is the
                # config's projector_pooling_ratio), when exactly one does.
                qualified = [k for k in node.to_dict() if k.endswith(f"_{key}")]
                value = getattr(node, qualified[0]) if len(qualified) == 1 else None
            if isinstance(value, bool | int | float | str) or (isinstance(value, list) and value):
                mirrored[name] = square_side(value) or value if key.endswith("_size") else value
                break
    return mirrored


def _additional_image_tokens(config: PretrainedConfig) -> int:
    """``num_additional_image_tokens`` for a LLaVA-style processor: the tokens it must add to the patch count.

    Such a processor writes ``patches + num_additional`` tokens, minus one under the ``"default"`` feature
    strategy. What the model really keeps is measured (:func:`measured_image_tokens`): VipLLaVA has a CLIP CLS
    token but no strategy in its config and always drops it, so counting the CLS (as the stated
    ``num_additional_image_tokens`` or the tower's parameters suggest) would be one token too many. Without a
    measurement, the config's value, else the tower's learned prefix tokens.
    """
    drop = 1 if getattr(config, "vision_feature_select_strategy", None) == "default" else 0
    model_cls = _model_class(config)
    measured = measured_image_tokens(config, model_cls) if model_cls is not None else None
    patches = geometric_image_tokens(config)
    if measured is not None and patches is not None and measured + drop >= patches:
        return measured + drop - patches
    return vision_prefix_tokens(config)


def _generic_processor_kwargs(cls: type, config: PretrainedConfig) -> dict[str, Any]:
    """Processor ``__init__`` arguments mirroring config fields (patch size, feature strategy, seq length)."""
    parameters = inspect.signature(cls.__init__).parameters
    count = image_tokens_per_image(config)
    sources: dict[str, Any] = {
        "patch_size": tile_and_patch(config)[1],
        "vision_feature_select_strategy": getattr(config, "vision_feature_select_strategy", None),
    }
    if "num_additional_image_tokens" in parameters:
        sources["num_additional_image_tokens"] = _additional_image_tokens(config)
    for name in _PROCESSOR_COUNT_NAMES:
        sources[name] = count
    if "num_image_tokens" in parameters and "vision_feature_select_strategy" in parameters:
        # LLaVA-OneVision's num_image_tokens counts the tower's outputs, CLS included (its processor subtracts
        # one under the "default" strategy itself).
        sources["num_image_tokens"] = (geometric_image_tokens(config) or 0) + vision_prefix_tokens(config)
    derived = {name: value for name, value in sources.items() if name in parameters and value is not None}
    return _mirrored_config_values(parameters, config) | derived


def _set_flat_defaults(processor: ProcessorMixin, config: PretrainedConfig, model_cls: type | None) -> None:
    """Processor-level call defaults (not ``__init__`` arguments) that must follow the tiny config.

    Processors merge attributes named like their ``valid_processor_kwargs`` into every call, so setting the
    attribute on the instance changes the default: GOT-OCR2's ``num_image_tokens`` (a class attribute of 256)
    and ``return_mm_token_type_ids``, returned when the model's ``forward`` takes ``mm_token_type_ids``.
    """
    kwargs_cls = getattr(processor, "valid_processor_kwargs", None)
    flat = set(getattr(kwargs_cls, "__annotations__", {}))
    count = image_count_keys(config) and image_tokens_per_image(config)
    if not count and model_cls is not None:
        # No config key states the count: what the model's own image features measure wins over the patch
        # geometry (Kosmos-2's learned-query resampler keeps `latent_query_num` rows whatever the patch grid).
        count = measured_image_tokens(config, model_cls)
    count = count or image_tokens_per_image(config)
    for name in _PROCESSOR_COUNT_NAMES:
        if name in flat and hasattr(processor, name) and count is not None:
            setattr(processor, name, count)
    if model_cls is not None:
        forward = inspect.signature(model_cls.forward).parameters
        if "mm_token_type_ids" in forward and "return_mm_token_type_ids" in flat:
            processor.return_mm_token_type_ids = True


def _component(cls: type, table: dict[str, Recipe], config: PretrainedConfig) -> Any:
    """An image/video processor with the recipe's (or the generic) sizes.

    A size the class does not take as an argument but keeps as an attribute (Cohere2-Vision's ``patch_size``,
    which its processor reads off the image processor) is set on the instance.
    """
    recipe = _recipe(table, cls)
    kwargs = _config_mirrors(cls, config)
    kwargs.update(recipe(config) if recipe else _generic_component_kwargs(cls, config))
    accepted = _accepted(cls, kwargs)
    component = cls(**accepted)
    for name, value in kwargs.items():
        if name not in accepted and hasattr(component, name):
            setattr(component, name, value)
    return component


def _model_class(config: PretrainedConfig) -> type | None:
    # local import: model.py builds the processor: import here, not at module level
    from .model import model_class_for

    try:
        return model_class_for(config)
    except KeyError:
        return None


def processor_for_config(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The HF processor of ``config.model_type``, sized for the (already tiny) ``config``.

    The chat template is the tokenizer's (see :func:`build_tiny_tokenizer`); a generic template gets the
    placeholder the processor instance expects in text.
    """
    classes = resolve_processor_classes(config)
    processor_cls = classes["processor"]
    kwargs: dict[str, Any] = {"tokenizer": tokenizer}
    if "chat_template" in inspect.signature(processor_cls.__init__).parameters:
        kwargs["chat_template"] = tokenizer.chat_template
    if "image_processor" in classes:
        kwargs["image_processor"] = _component(classes["image_processor"], IMAGE_PROCESSOR_RECIPES, config)
    if "video_processor" in classes:
        kwargs["video_processor"] = _component(classes["video_processor"], VIDEO_PROCESSOR_RECIPES, config)
    if "feature_extractor" in classes:
        # An audio front end: its defaults do, the tiny tests never give audio (no size follows the tower).
        kwargs["feature_extractor"] = classes["feature_extractor"]()
    kwargs.update(_generic_processor_kwargs(processor_cls, config))
    recipe = _recipe(PROCESSOR_RECIPES, processor_cls)
    if recipe is not None:
        kwargs.update(recipe(config))
    processor = processor_cls(**kwargs)
    _set_flat_defaults(processor, config, _model_class(config))
    template = tokenizer.chat_template
    if isinstance(template, str) and CHATML_IMAGE_PLACEHOLDER in template:
        template = template.replace(CHATML_IMAGE_PLACEHOLDER, text_image_placeholder(processor, config))
        tokenizer.chat_template = template
    # Processors whose __init__ takes no chat_template (Fuyu) still apply one set on the instance.
    processor.chat_template = template
    return processor


PROBE_MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]


def probe_image(config: PretrainedConfig) -> Image.Image:
    """A blank image a bit larger than one tile of the tiny tower (so tiling processors tile it)."""
    side = square_side(getattr(vision_config(config), "image_size", None)) or 28
    return Image.new("RGB", (2 * side, side + side // 2), (127, 127, 127))


def text_image_placeholder(processor: ProcessorMixin, config: PretrainedConfig) -> str:
    """What the generic chat template must write for an image so that this processor accepts the prompt.

    Most processors expand their ``image_token`` found in the text; some insert the image themselves and
    reject a prompt that already has one (Fuyu), or keep it as a stray extra image token next to the ones
    they insert (IDEFICS, which then counts a second, missing image). The candidates are tried on a probe
    image, in order: the processor's ``image_token``, nothing. The first the processor accepts wins, unless
    nothing gives image tokens too and fewer of them (the placeholder was left unconsumed); if none is
    accepted, the image token is kept, so the error shows where the prompt is used.
    """
    accepted = accepted_image_placeholder(processor, config)
    return accepted if accepted is not None else _placeholders(processor)[0]


def _placeholders(processor: ProcessorMixin) -> list[str]:
    return list(dict.fromkeys([getattr(processor, "image_token", None) or "<image>", ""]))


def accepted_image_placeholder(processor: ProcessorMixin, config: PretrainedConfig) -> str | None:
    """The placeholder (see :func:`text_image_placeholder`) with which the processor accepts a chat prompt and
    a probe image: the first accepted, or nothing where the first leaves a stray image token next to the ones
    the processor inserts itself; ``None`` when it rejects every one (the processor's chat template is left
    as the last try set it)."""
    template = processor.tokenizer.chat_template
    placeholders = _placeholders(processor)
    counts: dict[str, int] = {}
    for placeholder in placeholders:
        processor.chat_template = template.replace(CHATML_IMAGE_PLACEHOLDER, placeholder)
        try:
            prompt = processor.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True)
            inputs = processor(text=[prompt], images=[probe_image(config)], return_tensors="pt")
        except Exception:  # not the prompt format this processor expects: try the next one
            continue
        counts[placeholder] = _image_token_count(processor, inputs)
    accepted = [p for p in placeholders if p in counts]
    if not accepted:
        return None
    first = accepted[0]
    if first and 0 < counts.get("", 0) < counts[first]:
        return ""  # the processor inserts the image itself; the placeholder only adds a stray token
    return first


def _image_token_count(processor: ProcessorMixin, inputs: Any) -> int:
    """How many image tokens the processed ``inputs`` hold (0 where the processor names no image token)."""
    token_id = getattr(processor, "image_token_id", None)
    token = getattr(processor, "image_token", None)
    lookup = getattr(getattr(processor, "tokenizer", None), "convert_tokens_to_ids", None)
    if not isinstance(token_id, int) and isinstance(token, str) and callable(lookup):
        token_id = lookup(token)
    ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
    if not isinstance(token_id, int) or ids is None:
        return 0
    return int((ids == token_id).sum())


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
