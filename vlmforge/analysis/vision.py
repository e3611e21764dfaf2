"""Qwen-VL-style vision utilities: ``smart_resize``, patch parameters and images from chat messages.

These reproduce the behaviour of ``qwen_vl_utils`` that VLM Spectra exposes (resize to multiples of
patch x merge within a pixel budget); vlmforge's own prompt processing leaves resizing to each
family's Hugging Face processor, so these are utilities for callers that want the same pre-resize.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vlmforge.core.processing import load_image

IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200


def _round_by(value: float, factor: int) -> int:
    return round(value / factor) * factor


def _ceil_by(value: float, factor: int) -> int:
    return math.ceil(value / factor) * factor


def _floor_by(value: float, factor: int) -> int:
    return math.floor(value / factor) * factor


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """``(height, width)`` rounded to multiples of ``factor`` with the pixel count kept in bounds.

    Both sides are rounded to the nearest multiple of ``factor`` (at least ``factor``); when the area
    then exceeds ``max_pixels`` (falls below ``min_pixels``) the image is scaled down (up) keeping its
    aspect ratio and the sides are floored (ceiled) to multiples of ``factor``.

    Raises:
        ValueError: a side is not positive, or the aspect ratio exceeds 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image sides must be positive, got height={height}, width={width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio}")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return h_bar, w_bar


def resolve_patch_params(vision_config: Any, model_name: str | None = None) -> tuple[int, int]:
    """``(patch_size, spatial_merge_size)`` of a vision config.

    Qwen3-VL-8B is (16, 2) whatever its config says (as in VLM Spectra); otherwise the config's values,
    with a missing merge size read as 1, and (28, 1) when the config has no patch size.
    """
    if model_name is not None and "qwen3-vl-8b" in model_name.lower():
        return 16, 2
    patch = getattr(vision_config, "patch_size", None) if vision_config is not None else None
    if not isinstance(patch, int) or patch <= 0:
        return 28, 1
    merge = getattr(vision_config, "spatial_merge_size", None)
    return patch, merge if isinstance(merge, int) and merge > 0 else 1


def _open_image(source: Any) -> Image.Image:
    """A PIL image from a PIL image, a path, a ``file://`` URL or a ``data:image/...;base64,`` URI."""
    if isinstance(source, str) and source.startswith("data:image") and "base64," in source:
        raw = base64.b64decode(source.split("base64,", 1)[1])
        with Image.open(io.BytesIO(raw)) as opened:
            return load_image(opened.copy())
    if isinstance(source, str) and source.startswith("file://"):
        source = Path(source[len("file://") :])
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        raise ValueError(f"remote images are not fetched (offline): {source!r}; pass a PIL image or a path")
    return load_image(source)


def fetch_image(item: dict[str, Any], image_factor: int | None = None) -> Image.Image:
    """The image of one message content item, resized by :func:`smart_resize`.

    The item's ``resized_height``/``resized_width`` win when both are given; otherwise its
    ``min_pixels``/``max_pixels`` (defaults as in Qwen-VL) bound the area.
    """
    factor = image_factor or IMAGE_FACTOR
    source = item.get("image", item.get("image_url"))
    if isinstance(source, dict):
        source = source.get("url")
    image = _open_image(source)
    if "resized_height" in item and "resized_width" in item:
        height, width = smart_resize(
            int(item["resized_height"]), int(item["resized_width"]), factor, min_pixels=0, max_pixels=2**62
        )
    else:
        height, width = smart_resize(
            image.height,
            image.width,
            factor,
            min_pixels=int(item.get("min_pixels", MIN_PIXELS)),
            max_pixels=int(item.get("max_pixels", MAX_PIXELS)),
        )
    return image.resize((width, height), Image.Resampling.BICUBIC)


def _content_items(conversations: Sequence[Any]) -> list[dict[str, Any]]:
    # One conversation (a list of messages) or a list of conversations.
    if conversations and isinstance(conversations[0], dict):
        conversations = [conversations]
    items = []
    for conversation in conversations:
        for message in conversation:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                items += [item for item in content if isinstance(item, dict)]
    return items


def process_vision_info(
    conversations: Sequence[Any], return_video_kwargs: bool = False, image_factor: int | None = None
) -> tuple[Any, ...]:
    """The images (and videos) of chat messages: ``(images, videos)`` or ``(images, videos, {"fps": [...]})``.

    Image items are ``{"type": "image", "image": <PIL image | path | file:// | data URI>}`` (also
    ``image_url``), resized with :func:`smart_resize` to multiples of ``image_factor`` (default 28).
    Either list is ``None`` when empty.

    Raises:
        NotImplementedError: a video item (vlmforge prompts carry images only).
    """
    images: list[Image.Image] = []
    for item in _content_items(conversations):
        if "video" in item or item.get("type") == "video":
            raise NotImplementedError("video items are not supported: vlmforge prompts carry images only")
        if "image" in item or "image_url" in item:
            images.append(fetch_image(item, image_factor))
    result: tuple[Any, ...] = (images or None, None)
    if return_video_kwargs:
        return (*result, {"fps": []})
    return result
