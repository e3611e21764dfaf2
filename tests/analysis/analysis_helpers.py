"""Helpers of the analysis tests (a module of its own: conftest modules are not importable)."""

from __future__ import annotations

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
    else:
        image = pixels.reshape(-1, *pixels.shape[-3:])[0]
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    return (image * std + mean).permute(1, 2, 0).clamp(0, 1).numpy()
