"""How many image tokens an image becomes, as the tiny config states it and as its geometry implies.

Shared by the processor builder (which writes that many tokens per image), the pipeline (which repairs counts
the shrinker left at their real size) and the agreement check after building.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import AutoModel, PretrainedConfig

from .shrink import (
    _EXCLUDED_SIZE_FIELD,
    _HEAD_KEYS,
    _PATCH_IN_NAME,
    _SIZE_FIELD,
    LATENT_COUNT_KEYS,
    _width_key,
)

__all__ = [
    "IMAGE_COUNT_KEYS",
    "config_keys_with_value",
    "feature_rows",
    "feature_width",
    "geometric_image_tokens",
    "grow_tile_to_token_grid",
    "image_count_keys",
    "image_feature_function",
    "image_tokens_per_image",
    "measured_image_tokens",
    "merge_factor",
    "reconcile_image_counts",
    "rescale_grid_pinpoints",
    "square_side",
    "tie_feature_width",
    "tile_and_patch",
    "vision_config",
    "vision_prefix_tokens",
]


def vision_config(config: PretrainedConfig) -> PretrainedConfig:
    """The vision tower's config: ``vision_config``, else a VQ image tokenizer's ``vq_config`` (Chameleon),
    else the config itself (a single-tower model)."""
    return getattr(config, "vision_config", None) or getattr(config, "vq_config", None) or config


# Config keys (anywhere in the config tree) that state how many image tokens one image (or tile) becomes.
IMAGE_COUNT_KEYS = (
    "image_seq_length",
    "mm_tokens_per_image",
    "num_image_tokens",
    "image_seq_len",
    "vision_soft_tokens_per_image",
)
# Token-merging factors between the vision tower's patch grid and the image tokens (per side).
_MERGE_KEYS = ("spatial_merge_size", "merge_size", "downsample_factor", "scale_factor")
_RATIO_KEYS = ("downsample_ratio",)
# Names of learned tokens a ViT prepends to its patch sequence (CLIP's class embedding, DINO's cls/registers).
_PREFIX_PARAMETERS = ("class_embedding", "cls_token", "register_tokens")


def square_side(value: object) -> int | None:
    """A square side from an int, a ``[h, w]`` list or a ``{"height": h, ...}`` dict (None if not square)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple) and value and all(v == value[0] for v in value):
        return square_side(value[0])
    return None


def merge_factor(config: PretrainedConfig) -> int:
    """Per-side factor by which the projector merges patches into image tokens (1 if it does not)."""
    factor = 1
    for node in (config, vision_config(config)):
        for key in _MERGE_KEYS:
            value = getattr(node, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                factor *= value
        for key in _RATIO_KEYS:
            value = getattr(node, key, None)
            if isinstance(value, float) and 0 < value < 1:
                factor *= round(1 / value)
    return factor


def _config_tree(config: PretrainedConfig, prefix: str = "") -> list[tuple[str, PretrainedConfig]]:
    """``(dotted prefix, config)`` for the config and every nested sub-config."""
    nodes = [(prefix, config)]
    for key in config.sub_configs:
        sub_config = getattr(config, key, None)
        if isinstance(sub_config, PretrainedConfig):
            nodes.extend(_config_tree(sub_config, f"{prefix}{key}."))
    return nodes


def image_count_keys(config: PretrainedConfig) -> dict[str, int]:
    """Config keys (dotted paths) stating an image-token count, with their values (see IMAGE_COUNT_KEYS)."""
    found = {}
    for prefix, node in _config_tree(config):
        for key in (*IMAGE_COUNT_KEYS, *LATENT_COUNT_KEYS):
            value = getattr(node, key, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found[f"{prefix}{key}"] = value
    return found


def tile_and_patch(config: PretrainedConfig) -> tuple[int | None, int | None]:
    """The vision tower's (image side, patch side); None where the config does not say.

    A timm tower (PerceptionLM's ``vit_pe_core_large_patch14_336``) keeps them in ``model_args``
    (``img_size``, ``patch_size``) or only in its architecture name (``patch14``); a convolutional VQ
    encoder states ``resolution`` and downsampling levels.
    """
    vision = vision_config(config)
    side = square_side(getattr(vision, "image_size", None))
    patch = square_side(getattr(vision, "patch_size", None))
    multipliers = getattr(vision, "channel_multiplier", None)
    if (
        isinstance(multipliers, list)
        and multipliers
        and isinstance(getattr(vision, "base_channels", None), int)
    ):
        # A convolutional VQ encoder: its image size is `resolution`, and each code covers the pixels of
        # every level's 2x downsampling (all levels but the last).
        side = side or square_side(getattr(vision, "resolution", None))
        patch = patch or 2 ** (len(multipliers) - 1)
    args = getattr(vision, "model_args", None)
    if isinstance(args, dict):
        side = side or square_side(args.get("img_size"))
        patch = patch or square_side(args.get("patch_size"))
        if patch is None and (match := _PATCH_IN_NAME.search(str(getattr(vision, "architecture", "")))):
            patch = int(match.group(1))
    return side, patch


def geometric_image_tokens(config: PretrainedConfig) -> int | None:
    """Image tokens of one image (tile) from the vision tower's geometry: (side / patch / merge) ** 2."""
    side, patch = tile_and_patch(config)
    if not side or not patch:
        return None
    return (side // patch) ** 2 // merge_factor(config) ** 2


def image_tokens_per_image(config: PretrainedConfig) -> int | None:
    """The image-token count a processor should write per image (tile): the config's own statement if it has
    one (a resampler's latent count, ``image_seq_length``...), else the vision geometry."""
    counts = image_count_keys(config)
    return next(iter(counts.values()), None) or geometric_image_tokens(config)


def vision_prefix_tokens(config: PretrainedConfig) -> int:
    """Learned tokens the vision tower prepends to the patches (1 for CLIP's CLS), from the config or model.

    ``num_additional_image_tokens`` in the config wins; otherwise the tower is instantiated on the meta device
    (no memory, no weights) and its parameters are looked at, so a CLS token is found whatever the tower.
    """
    stated = getattr(config, "num_additional_image_tokens", None)
    if isinstance(stated, int):
        return stated
    vision = getattr(config, "vision_config", None)
    if not isinstance(vision, PretrainedConfig):
        return 0
    try:
        with torch.device("meta"):
            tower = AutoModel.from_config(vision)
    except Exception:  # a tower AutoModel cannot build: assume no prefix tokens
        return 0
    names = [name for name, _ in tower.named_parameters()]
    return int(any(name.rsplit(".", 1)[-1] in _PREFIX_PARAMETERS for name in names))


def image_feature_function(model: torch.nn.Module) -> Any:
    """The model's ``get_image_features`` (on the generation class or its inner ``model``), or None."""
    for owner in (model, getattr(model, "model", None)):
        function = getattr(owner, "get_image_features", None)
        if callable(function):
            return function
    return None


def feature_rows(features: Any) -> int:
    """Number of feature vectors in a ``get_image_features`` result (tensor, tensor list, model output).

    A model output without a ``pooler_output`` (Llama4's returns the vision tower's output and projects it row
    by row in ``forward``) counts the rows of its ``last_hidden_state``.
    """
    pooled = getattr(features, "pooler_output", features)
    features = getattr(features, "last_hidden_state", None) if pooled is None else pooled
    if isinstance(features, torch.Tensor):
        return features.numel() // features.shape[-1] if features.ndim else 0
    if isinstance(features, list | tuple):
        return sum(feature_rows(f) for f in features)
    return 0


def feature_width(features: Any) -> int | None:
    """Width of the feature vectors in a ``get_image_features`` result (None if there are none).

    None too for a model output without a ``pooler_output``: its ``last_hidden_state`` is projected further
    in the model's ``forward``, so its width is not the width the token embeddings receive.
    """
    features = getattr(features, "pooler_output", features)
    if isinstance(features, torch.Tensor):
        return features.shape[-1] if features.ndim else None
    if isinstance(features, list | tuple):
        return next((w for f in features if (w := feature_width(f)) is not None), None)
    return None


def config_keys_with_value(config: PretrainedConfig, value: int) -> list[str]:
    """Dotted config keys (any sub-config) whose integer value is ``value``."""
    found = []
    for prefix, node in _config_tree(config):
        for key, item in node.to_diff_dict().items():
            if isinstance(item, int) and not isinstance(item, bool) and item == value:
                found.append(f"{prefix}{key}")
    return found


def _meta_features(config: PretrainedConfig, model_cls: type) -> tuple[int, int | None, int | None] | None:
    """(rows, width, token-embedding width) of the image features of one ``image_size`` tile, on meta.

    The meta device computes shapes only (no memory, no arithmetic), so this measures what the model's own
    code does. None when the model has no ``get_image_features`` taking plain ``pixel_values`` at that size.
    """
    tile, _ = tile_and_patch(config)
    channels = getattr(vision_config(config), "num_channels", 3)
    if not tile:
        return None
    try:
        with torch.device("meta"):
            model = model_cls._from_config(config)
            function = image_feature_function(model)
            if function is None:
                return None
            output = function(pixel_values=torch.empty(1, channels, tile, tile))
            embed_width = getattr(model.get_input_embeddings(), "embedding_dim", None)
    except Exception:  # data-dependent shapes, extra required inputs...: not measurable this way
        return None
    return feature_rows(output), feature_width(output), embed_width


def measured_image_tokens(config: PretrainedConfig, model_cls: type) -> int | None:
    """Image features the model makes of one tile of ``image_size``, from a forward on the meta device.

    This measures what the model's own code does (a projector that downsamples by convolutions, a tower that
    keeps or drops a CLS token) where the config states nothing about it.
    """
    measured = _meta_features(config, model_cls)
    return (measured[0] or None) if measured else None


def _width_candidates(config: PretrainedConfig, width: int) -> list[str]:
    """Size fields equal to ``width`` that are no tower's own width or geometry (dotted keys)."""
    candidates = []
    for prefix, node in _config_tree(config):
        data = node.to_dict()
        own = _width_key(data) if any(isinstance(data.get(k), int) for k in _HEAD_KEYS) else None
        for key, value in data.items():
            if (
                value == width
                and isinstance(value, int)
                and key != own
                and _SIZE_FIELD.search(key)
                and not _EXCLUDED_SIZE_FIELD.search(key)
            ):
                candidates.append(f"{prefix}{key}")
    return candidates


def _set_dotted(config: PretrainedConfig, key: str, value: int) -> None:
    *path, name = key.split(".")
    node = config
    for part in path:
        node = getattr(node, part)
    setattr(node, name, value)


def tie_feature_width(config: PretrainedConfig, model_cls: type) -> dict[str, tuple[int, int]]:
    """Make the image features as wide as the token embeddings they replace, in place; returns the change.

    The shrinker ties projector widths it recognises (:func:`vlmforge.tiny.shrink.shrink_config`), but a
    config may name its projector output anything and state a real value unrelated to its (default)
    decoder (Janus: ``vision_config.projection_dim`` 2048 next to a 4096-wide decoder). Measuring the
    features on the meta device finds the mismatch; each size field equal to the feature width (not a
    tower's own width) is then tried at the embedding width, and the first that makes the features fit is
    kept. Returns ``{dotted key: (old, new)}``, empty when the widths agree or nothing fits.
    """
    measured = _meta_features(config, model_cls)
    if measured is None:
        return {}
    _, width, embed_width = measured
    if not (isinstance(width, int) and isinstance(embed_width, int)) or width == embed_width:
        return {}
    for key in _width_candidates(config, width):
        trial = copy.deepcopy(config)
        _set_dotted(trial, key, embed_width)
        retried = _meta_features(trial, model_cls)
        if retried is not None and retried[1] == embed_width:
            _set_dotted(config, key, embed_width)
            return {key: (width, embed_width)}
    return {}


# Image tokens per side a tile must become at least: a 1x1 grid hides row/column order mix-ups.
_MIN_TOKEN_GRID_SIDE = 2
# Doublings of the tile tried before giving up (a 16x larger tile is no longer tiny).
_MAX_TILE_DOUBLINGS = 4


def grow_tile_to_token_grid(config: PretrainedConfig, model_cls: type) -> int | None:
    """Double the tower's ``image_size`` until one tile makes a 2x2 token grid; returns the new side.

    The shrinker makes a tile a 2x2 grid of *merged* patches for the merges the config states; a projector
    that downsamples further by itself (GOT-OCR2's convolutions, 4x per side) leaves a single image token,
    on which spatial order and pooling bugs are invisible. The token count is measured on the meta device
    (:func:`measured_image_tokens`); None when nothing changed or it cannot be measured.
    """
    vision = vision_config(config)
    original = getattr(vision, "image_size", None)
    side = square_side(original)
    measured = measured_image_tokens(config, model_cls)
    if not side or measured is None or measured >= _MIN_TOKEN_GRID_SIDE**2:
        return None
    for doubling in range(1, _MAX_TILE_DOUBLINGS + 1):
        new_side = side * 2**doubling
        vision.image_size = [new_side] * len(original) if isinstance(original, list | tuple) else new_side
        measured = measured_image_tokens(config, model_cls)
        if measured is not None and measured >= _MIN_TOKEN_GRID_SIDE**2:
            return new_side
    vision.image_size = original
    return None


def reconcile_image_counts(
    config: PretrainedConfig, model_cls: type | None = None
) -> dict[str, tuple[int, int]]:
    """Make the config's image-count keys state what the tiny model really makes of an image, in place.

    The shrinker cuts the tower to a few patches but cannot know every count key (``vision_config.
    num_image_tokens`` of Janus, an ``image_seq_length`` next to a ``[h, w]`` image size) nor every hidden
    downsampling (GOT-OCR2's projector convolutions). The processor writes these counts into prompts, so a
    stale one breaks every forward with an image. The count is measured on the model (``model_cls``, see
    :func:`measured_image_tokens`); failing that, a count larger than the tiny tower's patch count (a
    real-size leftover, never a tiny value) becomes the geometric one. Returns ``{dotted key: (old, new)}``.
    """
    counts = {k: v for k, v in image_count_keys(config).items() if k.rsplit(".", 1)[-1] in IMAGE_COUNT_KEYS}
    if not counts:
        return {}
    measured = measured_image_tokens(config, model_cls) if model_cls is not None else None
    tile, patch = tile_and_patch(config)
    fallback = geometric_image_tokens(config)
    changed = {}
    for prefix, node in _config_tree(config):
        for key in IMAGE_COUNT_KEYS:
            value: Any = getattr(node, key, None)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            if measured is not None:
                new = measured
            elif tile and patch and fallback and value > (tile // patch) ** 2:
                new = fallback
            else:
                continue
            if new != value:
                setattr(node, key, new)
                changed[f"{prefix}{key}"] = (value, new)
    return changed


def rescale_grid_pinpoints(config: PretrainedConfig, real_config: PretrainedConfig) -> list[list[int]] | None:
    """Scale ``image_grid_pinpoints`` from the real tile size to the tiny one, in place; returns the new grid.

    Any-resolution models (LLaVA-NeXT, LLaVA-OneVision) cut an image into tiles of the tower's
    ``image_size`` laid out on one of these canvases; the model views the tiles as a ``canvas / image_size``
    grid, so a canvas that is not a multiple of the tiny tile (384 px canvases, 28 px tiles) breaks the
    forward, and a real-size canvas makes hundreds of tiny tiles. Scaling keeps the real grid shapes.
    """
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    tile = square_side(getattr(vision_config(config), "image_size", None))
    real_tile = square_side(getattr(vision_config(real_config), "image_size", None))
    if not pinpoints or not tile or not real_tile or tile == real_tile:
        return None
    if not all(isinstance(v, int) and v % real_tile == 0 for pair in pinpoints for v in pair):
        return None
    scaled = [[v // real_tile * tile for v in pair] for pair in pinpoints]
    config.image_grid_pinpoints = scaled
    return scaled
