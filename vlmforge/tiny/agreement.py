"""After building: does the processor write as many image tokens as the model makes image features?

A processor sized from the config and a model built from it can still disagree (a count key left at its real
size, a CLS token counted on one side only, a tiling the model does not expect). The disagreement would show
up much later as "Image features and image tokens do not match" inside some conformance check; here it is
caught when the tiny model is built, with the config keys that set the processor's count.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import PretrainedConfig, PreTrainedModel, ProcessorMixin

from .image_tokens import (
    config_keys_with_value,
    feature_rows,
    feature_width,
    image_count_keys,
    image_feature_function,
    vision_config,
)

__all__ = [
    "ImageTokenMismatchError",
    "check_image_token_agreement",
    "image_token_agreement",
    "measure_image_features",
]

_MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
# Keys besides the explicit counts that decide how many tokens a processor writes per image.
_STRATEGY_KEYS = ("vision_feature_select_strategy", "num_additional_image_tokens")
_GEOMETRY_KEYS = ("image_size", "patch_size")
_TEXT_INPUTS = ("input_ids", "attention_mask")


class ImageTokenMismatchError(ValueError):
    """The processor's image-token count for an image differs from the model's image-feature count."""


def _suspect_keys(config: PretrainedConfig) -> dict[str, Any]:
    """Config keys the processor's count derives from, most specific first (dotted path -> value)."""
    suspects: dict[str, Any] = dict(image_count_keys(config))
    for key in _STRATEGY_KEYS:
        if getattr(config, key, None) is not None:
            suspects[key] = getattr(config, key)
    vision = vision_config(config)
    prefix = "vision_config." if vision is not config else ""
    for key in _GEOMETRY_KEYS:
        if getattr(vision, key, None) is not None:
            suspects[f"{prefix}{key}"] = getattr(vision, key)
    return suspects


def image_token_agreement(
    model: PreTrainedModel, processor: ProcessorMixin, sizes: Sequence[tuple[int, int]]
) -> list[tuple[tuple[int, int], int, int]]:
    """``(size, processor image tokens, model image features)`` for a one-image chat prompt per size.

    See :func:`measure_image_features`, which also returns the features' width.
    """
    return [(size, tokens, rows) for size, tokens, rows, _ in measure_image_features(model, processor, sizes)]


def measure_image_features(
    model: PreTrainedModel, processor: ProcessorMixin, sizes: Sequence[tuple[int, int]]
) -> list[tuple[tuple[int, int], int, int, int | None]]:
    """``(size, processor image tokens, model image features, feature width)`` per probe size.

    Empty when it cannot be measured: no integer ``image_token_id``, no ``get_image_features``, or a
    processor/model that fails on the probe (the harness reports those failures where they matter).
    """
    config = model.config
    image_token_id = getattr(config, "image_token_id", None)
    features = image_feature_function(model)
    if not isinstance(image_token_id, int) or features is None:
        return []
    parameters = inspect.signature(features).parameters
    results = []
    try:
        prompt = processor.apply_chat_template(_MESSAGES, add_generation_prompt=True)
        for width, height in sizes:
            image = Image.new("RGB", (width, height), (127, 127, 127))
            inputs = processor(text=[prompt], images=[image], return_tensors="pt")
            tokens = int((inputs["input_ids"] == image_token_id).sum())
            kwargs = {
                k: v
                for k, v in inputs.items()
                if k in parameters and k not in ("input_ids", "attention_mask")
            }
            if "pixel_values" not in kwargs:
                return []
            # A half-precision tiny model's vision tower refuses float32 pixels (the runtime casts them).
            kwargs = {
                k: v.to(model.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                for k, v in kwargs.items()
            }
            with torch.no_grad():
                output = features(**kwargs)
            results.append(((width, height), tokens, feature_rows(output), feature_width(output)))
    except Exception as error:  # any failure means "not measurable here"
        warnings.warn(f"processor/model image-token agreement not checked: {error!r}", stacklevel=2)
        return []
    return results


def check_image_token_agreement(
    model: PreTrainedModel, processor: ProcessorMixin, sizes: Sequence[tuple[int, int]]
) -> None:
    """Raise :class:`ImageTokenMismatchError` if, for an image of one of ``sizes``, the processor writes a
    different number of image tokens than the model makes image features, or the features are not as wide
    as the token embeddings they replace.

    The message names the config keys the processor's count comes from (``image_seq_length``,
    ``mm_tokens_per_image``, ``num_image_tokens``, the feature-select strategy, the tower's geometry), the
    first of which is usually the one at fault.
    """
    embedding = model.get_input_embeddings()
    embed_width = getattr(embedding, "embedding_dim", None)
    for (width, height), tokens, rows, feature_dim in measure_image_features(model, processor, sizes):
        if tokens != rows:
            suspects = ", ".join(f"{key}={value!r}" for key, value in _suspect_keys(model.config).items())
            raise ImageTokenMismatchError(
                f"tiny {model.config.model_type}: {type(processor).__name__} writes {tokens} image tokens "
                f"for a {width}x{height} image but {type(model).__name__} makes {rows} image features of it. "
                f"The processor's count follows these config keys: {suspects or 'none'}; the one at fault "
                "must be made to state what the tiny model produces."
            )
        if isinstance(embed_width, int) and feature_dim is not None and feature_dim != embed_width:
            # The features replace token embeddings: a projector left at its real width cannot be scattered.
            suspects = ", ".join(config_keys_with_value(model.config, feature_dim)) or "none found"
            raise ImageTokenMismatchError(
                f"tiny {model.config.model_type}: {type(model).__name__} makes image features of width "
                f"{feature_dim} but embeds tokens with width {embed_width}; config keys equal to "
                f"{feature_dim}: {suspects} (a projector width not tied to the decoder width?)."
            )
