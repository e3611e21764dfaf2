"""Helpers of the analysis tests (a module of its own: conftest modules are not importable)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmforge.core import ModelRegistry

#: Every registered family (the analysis layer has no per-family code: each one must work or say why).
FAMILIES = sorted(ModelRegistry.adapters())


def gradient_image(width: int, height: int) -> Image.Image:
    """Red grows left to right, green top to bottom: a misplaced crop or resize shows up in the pixels."""
    xs = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([xs, ys, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def processor_pixels(vlm, inputs) -> np.ndarray:
    """The processed image as the processor hands it to the vision tower, ``[H, W, 3]`` in 0..1.

    Undoes the processor's normalisation; Qwen-VL's flattened patch sequence is put back on its grid.
    """
    image_processor = vlm.processor.image_processor
    pixels = inputs["pixel_values"].float()
    grid_thw = inputs.get("image_grid_thw")
    if grid_thw is not None:
        _, rows, cols = (int(v) for v in grid_thw[0])
        merge = image_processor.merge_size
        patch = image_processor.patch_size
        temporal = image_processor.temporal_patch_size
        # Rows are patches in (row block, col block, row in block, col in block) order; each patch is
        # (channel, temporal, y, x).
        blocks = pixels.reshape(rows // merge, cols // merge, merge, merge, 3, temporal, patch, patch)
        image = blocks[:, :, :, :, :, 0].permute(4, 0, 2, 5, 1, 3, 6).reshape(3, rows * patch, cols * patch)
    elif inputs.get("spatial_shapes") is not None:
        # Flattened patches [1, patches, p * p * 3] (row-major over the grid, each patch (y, x, channel)),
        # padded past rows * cols; spatial_shapes is the (rows, cols) patch grid.
        rows, cols = (int(v) for v in inputs["spatial_shapes"][0])
        patch = round((pixels.shape[-1] // 3) ** 0.5)
        grid = pixels[0, : rows * cols].reshape(rows, cols, patch, patch, 3)
        image = grid.permute(4, 0, 2, 1, 3).reshape(3, rows * patch, cols * patch)
    elif pixels.dim() == 2:
        # One image's flat patches [patches, p * p * 3] (Fuyu; row-major over the grid, each patch
        # (y, x, channel)); the grid's rows are the image tokens' runs.
        is_image = vlm.adapter.image_token_mask(inputs)[0].int()
        starts = int(is_image[0]) + int(((is_image[1:] - is_image[:-1]) == 1).sum())
        rows, cols = starts, int(is_image.sum()) // starts
        patch = round((pixels.shape[-1] // 3) ** 0.5)
        grid = pixels.reshape(rows, cols, patch, patch, 3)
        image = grid.permute(4, 0, 2, 1, 3).reshape(3, rows * patch, cols * patch)
    else:
        image = pixels.reshape(-1, *pixels.shape[-3:])[0]
    # One value for all channels (Fuyu's 0.5) or one per channel.
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).flatten().expand(3).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).flatten().expand(3).view(3, 1, 1)
    # Un-normalised pixels are in rescaled units (x rescale_factor: 1/255 mostly, Chameleon's 1/128).
    rescale = getattr(image_processor, "rescale_factor", None) or 1 / 255
    return ((image * std + mean) / (rescale * 255)).permute(1, 2, 0).clamp(0, 1).numpy()


def _config_ints(values: Any, prefix: str = "") -> dict[str, int]:
    """Every integer of a (nested) config dict, by dotted key."""
    found: dict[str, int] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found.update(_config_ints(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found


def check_declared_not_applicable(vlm, image: Image.Image, error: Exception) -> str:
    """Check that a geometry refusal is the limitation it declares, from the processor and the config.

    Image geometry is not applicable where the image tokens are not one patch grid over one view:
    ``"tiles"`` (the processor really hands the tower several views of the one image) or ``"resampler"``
    (one view, but the image tokens are a fixed number of learned latents the model config declares,
    the same for every image), or ``"layout"`` with row separators (one view, its token grid plus a
    separator token per row, Emu3's VQ codes), or ``"cross_attention"`` (the image reaches the decoder
    through cross-attention layers; the prompt holds one image token). Any other refusal fails the test.
    Returns the reason, for the report.
    """
    assert isinstance(error, NotImplementedError), type(error)
    kind, reason = getattr(error, "kind", None), str(error)
    inputs = vlm.prepare_messages("x", image)
    pixels = inputs["pixel_values"]
    tokens = int(vlm.adapter.image_token_mask(inputs).sum())
    views = pixels.shape[1] if pixels.dim() == 5 else pixels.shape[0]  # one image's views
    if kind == "tiles":
        assert views > 1, (vlm.adapter.spec.name, tuple(pixels.shape))
        assert "views" in reason and "tiles" in reason, reason
    elif kind == "resampler":
        assert views == 1 and "image_grid_thw" not in inputs, tuple(pixels.shape)
        # A fixed number of queries: as many image tokens whatever the image's size and shape ...
        for size in ((300, 40), (40, 300), (512, 512)):
            other = vlm.prepare_messages("x", gradient_image(*size))
            assert int(vlm.adapter.image_token_mask(other).sum()) == tokens, size
        # ... and the count a latent / query setting of the model config states.
        declared = {
            key: value
            for key, value in _config_ints(vlm.model.config.to_dict()).items()
            if "latent" in key.rsplit(".", 1)[-1] or "quer" in key.rsplit(".", 1)[-1]
        }
        assert tokens in declared.values(), (tokens, declared)
        assert "resampler" in reason and str(tokens) in reason, reason
    elif kind == "layout" and "row separator" in reason:
        # One view whose image tokens are its code grid plus one separator token per row: the grid is
        # the pixel tensor's size over a pixels-per-token factor the processor states.
        assert views == 1 and pixels.dim() == 4, tuple(pixels.shape)
        height, width = (int(v) for v in pixels.shape[-2:])
        stated = {
            value
            for owner in (vlm.processor, getattr(vlm.processor, "image_processor", None))
            for value in vars(owner or object()).values()
            if isinstance(value, int) and not isinstance(value, bool) and value > 1
        }
        assert any(
            height % f == width % f == 0 and tokens == (height // f) * (width // f + 1) for f in stated
        ), (tokens, (height, width), stated)
        assert str(tokens) in reason, reason
    elif kind == "cross_attention":
        # The model really has the declared cross-attention (layers holding the module, or the decoder's own
        # list of blocks), and the prompt holds one image token per image: a marker, not a grid of patches.
        modules = vlm.adapter.spec.modules
        if modules.cross_attention is not None:
            layers = [
                i for i, layer in enumerate(vlm.adapter.lm_layers) if hasattr(layer, modules.cross_attention)
            ]
            assert layers and f"cross-attention layers {', '.join(map(str, layers))}" in reason, (
                layers,
                reason,
            )
        else:
            blocks = getattr(vlm.adapter.language_model, modules.cross_attention_blocks or "", None)
            assert blocks is not None and len(blocks) and f"{len(blocks)} cross-attention blocks" in reason, (
                reason
            )
        assert tokens == 1, tokens
    else:
        raise AssertionError(f"{vlm.adapter.spec.name}: geometry refused without a declared reason: {reason}")
    return reason
