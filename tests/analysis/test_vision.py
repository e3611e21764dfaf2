"""Qwen-VL-style vision utilities: smart_resize properties, patch parameters, images from messages."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from vlmforge.analysis import process_vision_info, resolve_patch_params, smart_resize
from vlmforge.analysis.vision import MAX_PIXELS, MIN_PIXELS

side = st.integers(min_value=1, max_value=20000)


@settings(max_examples=300, deadline=None)
@given(side, side, st.sampled_from([14, 28, 32, 56]))
def test_smart_resize_properties(height: int, width: int, factor: int) -> None:
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(height, width, factor)
        return
    new_h, new_w = smart_resize(height, width, factor)
    assert new_h % factor == 0 and new_w % factor == 0
    assert new_h >= factor and new_w >= factor
    assert min(MIN_PIXELS, factor * factor) <= new_h * new_w <= MAX_PIXELS
    # The aspect ratio survives up to the rounding to whole factors (unless a side sits at the minimum, or
    # was below one factor to begin with: such a side is raised to a whole factor, whatever the ratio).
    if min(new_h, new_w) > factor and min(height, width) >= factor:
        assert (
            abs(new_w / new_h - width / height) <= (width / height) * (factor / new_h + factor / new_w) * 1.5
        )
    if height > factor / 2 and width > factor / 2:
        # transformers' own Qwen2-VL implementation is the reference where both agree on the domain
        # (it does not floor tiny sides to one factor before the bounds check: a side of exactly half a
        # factor rounds half-to-even to 0 there, to one factor here, as in qwen_vl_utils).
        assert (new_h, new_w) == hf_smart_resize(height, width, factor, MIN_PIXELS, MAX_PIXELS)


def test_smart_resize_bounds_and_errors() -> None:
    assert smart_resize(28, 28) == (56, 56)  # below min_pixels: scaled up
    assert smart_resize(100, 100, factor=10, min_pixels=0, max_pixels=10**9) == (100, 100)
    assert smart_resize(4000, 4000, max_pixels=1000 * 1000) == (980, 980)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2010)
    with pytest.raises(ValueError):
        smart_resize(0, 10)


def test_resolve_patch_params() -> None:
    assert resolve_patch_params(SimpleNamespace(patch_size=14, spatial_merge_size=2)) == (14, 2)
    assert resolve_patch_params(SimpleNamespace(patch_size=14)) == (14, 1)
    assert resolve_patch_params(SimpleNamespace()) == (28, 1)
    assert resolve_patch_params(None) == (28, 1)
    config = SimpleNamespace(patch_size=14, spatial_merge_size=2)
    assert resolve_patch_params(config, "Qwen/Qwen3-VL-8B-Instruct") == (16, 2)


def test_process_vision_info(tmp_path) -> None:
    image = Image.new("RGB", (300, 100), "blue")
    path = tmp_path / "blue.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "image": image},
                {"type": "image", "image": str(path)},
                {"type": "image", "image": f"file://{path}"},
                {"type": "image", "image": data_uri, "max_pixels": 28 * 28 * 8},
            ],
        }
    ]
    images, videos = process_vision_info(messages)
    assert videos is None
    assert [im.size for im in images[:3]] == [(308, 112)] * 3
    assert images[3].size[0] * images[3].size[1] <= 28 * 28 * 8
    images, videos, kwargs = process_vision_info([messages], return_video_kwargs=True, image_factor=32)
    assert all(im.width % 32 == 0 and im.height % 32 == 0 for im in images) and kwargs == {"fps": []}
    assert process_vision_info([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == (
        None,
        None,
    )
    with pytest.raises(NotImplementedError, match="video"):
        process_vision_info([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}]}])
