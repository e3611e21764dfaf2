"""Image geometry as the model sees it: which region of the original image each image token covers.

:func:`image_info` derives the geometry for any registered family from what the family's own Hugging
Face processor does to the image, never from a per-family table:

* the processor is run on the image (through the family's prompt processor, so ``input_ids`` carry
  the real image tokens);
* processors that report a patch grid (``image_grid_thw``, Qwen-VL style) give the processed size as
  grid x patch size, with the merge factor from the image processor or the vision config;
* processors that hand the tower flattened patches with ``spatial_shapes`` (NaFlex-style, LFM2-VL) give
  the processed size as that patch grid x patch size; several such views (tiles, Molmo2's crops) are
  several views;
* a VQ tokenizer (Emu3, Chameleon) has no patch size: its pixels per code (``spatial_factor`` /
  ``downsample_ratio``, else the VQ encoder's downsampling from its config) play that part;
* otherwise the processed size is the pixel tensor's spatial shape; a centre crop (``do_center_crop``)
  is located by re-running the image processor with the crop switched off (which gives the resized
  size) and applying the processor's centre-crop rule; a pad-to-square (``do_pad``) is accounted for;
* the grid is processed size / (patch size x merge factor), and it is cross-checked against the number
  of image tokens the processor put in ``input_ids`` (tokens in several runs must be the grid's rows,
  one run each, as Pixtral's ``[IMG_BREAK]`` after every row makes them): a family whose image tokens
  are not one grid over one view of the image raises :class:`UnsupportedGeometryError` (a
  ``NotImplementedError``) that says why: several views (Idefics3 / SmolVLM tiles plus a global view,
  LLaVA-NeXT any-resolution tiles), a resampler's learned latents (Idefics2's perceiver: as many image
  tokens for every image, none of them standing for a region), or a grid with a separator token after
  each row (Emu3's VQ codes: a ``"layout"`` refusal, token ``r * grid_w + c`` not being cell ``(r, c)``).

Coordinates: sizes are ``(width, height)``; boxes are ``(x0, y0, x1, y1)`` in pixels. ``crop_box`` is in
original-image pixels (it may extend past the image when the processor pads); corrected boxes and
masks are in processed-image pixels, where the patch grid lives.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from vlmforge.analysis.patch_overview import DEFAULT_HIGHLIGHT, LabelMode, draw_patch_overview
from vlmforge.core.errors import VLMForgeError
from vlmforge.core.processing import load_image

Box = tuple[float, float, float, float]


GeometryRefusal = Literal["tiles", "resampler", "layout", "no_grid"]


class UnsupportedGeometryError(VLMForgeError, NotImplementedError):
    """The family's image tokens cannot be expressed as one patch grid over one view of the image.

    A ``NotImplementedError``: the geometry is declared not applicable to the family, with the reason in
    the message and its category in :attr:`kind`, so callers (and tests) can tell a declared limitation
    from a bug:

    * ``"tiles"``: the processor splits one image into several views (tiles, a global view);
    * ``"resampler"``: the image tokens are a fixed number of learned latent queries (a perceiver or
      Q-Former resampler) read over the patches, so no image token stands for one region;
    * ``"layout"``: one view, but the image tokens do not match its patch grid (extra tokens, such as
      a row separator after each row of codes);
    * ``"no_grid"``: the processor's outputs state no patch grid at all.
    """

    def __init__(self, message: str, kind: GeometryRefusal = "layout") -> None:
        super().__init__(message)
        self.kind: GeometryRefusal = kind


@dataclass(frozen=True)
class CorrectedBbox:
    """A bounding box mapped into processed-image pixels.

    Attributes:
        bbox: ``(x0, y0, x1, y1)`` in processed-image pixels; ``(0, 0, 0, 0)`` when the box lies wholly
            outside what the model sees.
        clipped: part of the box (or all of it) was outside the crop region and was cut off.
    """

    bbox: Box
    clipped: bool


@dataclass(frozen=True)
class CorrectedSeg:
    """A segmentation mask mapped into processed-image pixels.

    Attributes:
        mask: boolean array ``[processed_h, processed_w]``.
        clipped: some foreground pixels were outside the crop region and were cut off.
    """

    mask: np.ndarray
    clipped: bool


@dataclass(frozen=True)
class PatchOverlap:
    """Which patches (grid cells) a region overlaps, and how much of each.

    Attributes:
        patch_indices: row-major cell indices (``row * grid_w + col``) with a non-zero overlap, ascending.
        overlap_fractions: the covered fraction of each listed cell's area, in ``(0, 1]``.
    """

    patch_indices: list[int]
    overlap_fractions: list[float]


@dataclass
class ImageInfo:
    """The geometry of one image as the model sees it.

    Attributes:
        image: the processed view (crop region of the original, resized to ``processed_size``), RGB.
        original_size: ``(w, h)`` of the image given to the processor.
        processed_size: ``(w, h)`` of the pixels the vision tower sees.
        crop_box: ``(x0, y0, x1, y1)`` of the original image that maps onto the processed image
            (the whole image when nothing is cropped; beyond it where the processor pads).
        patch_size: the vision tower's patch side in processed pixels.
        spatial_merge_size: patches merged per side into one image token (1 when none).
        grid_h, grid_w: the image-token grid; cell ``(r, c)`` is image token ``r * grid_w + c``.
    """

    image: Image.Image
    original_size: tuple[int, int]
    processed_size: tuple[int, int]
    crop_box: Box
    patch_size: int
    spatial_merge_size: int
    grid_h: int
    grid_w: int
    num_image_tokens: int | None = field(default=None, compare=False)

    # ---------------------------------------------------------------- sizes
    @property
    def effective_patch_size(self) -> int:
        """Processed pixels per grid cell side (``patch_size * spatial_merge_size``)."""
        return self.patch_size * self.spatial_merge_size

    @property
    def num_patches(self) -> int:
        """Grid cells, i.e. image tokens of this image."""
        return self.grid_h * self.grid_w

    @property
    def scale(self) -> tuple[float, float]:
        """Processed pixels per original pixel along x and y."""
        x0, y0, x1, y1 = self.crop_box
        return self.processed_size[0] / (x1 - x0), self.processed_size[1] / (y1 - y0)

    def to_processed(self, x: float, y: float) -> tuple[float, float]:
        """Map an original-image point to processed-image pixels."""
        sx, sy = self.scale
        return (x - self.crop_box[0]) * sx, (y - self.crop_box[1]) * sy

    # ---------------------------------------------------------- corrections
    def correct_bbox(self, bbox: Box) -> CorrectedBbox:
        """Map an original-image box into processed pixels, clamped to what the model sees.

        Raises:
            ValueError: ``bbox`` is not four numbers with ``x0 <= x1`` and ``y0 <= y1``.
        """
        x0, y0, x1, y1 = _check_box(bbox)
        cx0, cy0, cx1, cy1 = self.crop_box
        # The region the model sees is the crop box within the image (padding carries no content).
        vx0, vy0 = max(cx0, 0.0), max(cy0, 0.0)
        vx1, vy1 = min(cx1, float(self.original_size[0])), min(cy1, float(self.original_size[1]))
        kx0, ky0, kx1, ky1 = max(x0, vx0), max(y0, vy0), min(x1, vx1), min(y1, vy1)
        clipped = (kx0, ky0, kx1, ky1) != (x0, y0, x1, y1)
        # Nothing left: wholly outside, or cut down to an edge (a degenerate box inside stays as it is).
        if kx0 > kx1 or ky0 > ky1 or (clipped and (kx0 == kx1 or ky0 == ky1)):
            return CorrectedBbox((0.0, 0.0, 0.0, 0.0), True)
        width, height = self.processed_size
        px0, py0 = self.to_processed(kx0, ky0)
        px1, py1 = self.to_processed(kx1, ky1)
        # Clamp away float rounding at the edges (250 -> 28.000000000000004).
        px0, px1 = (min(max(v, 0.0), float(width)) for v in (px0, px1))
        py0, py1 = (min(max(v, 0.0), float(height)) for v in (py0, py1))
        return CorrectedBbox((px0, py0, px1, py1), clipped)

    def correct_seg(self, mask: Any) -> CorrectedSeg:
        """Map an original-size boolean mask (``[h, w]``) into processed pixels (nearest neighbour).

        Raises:
            ValueError: the mask is not 2-D of the original image's size.
        """
        array = np.asarray(mask).astype(bool)
        w, h = self.original_size
        if array.shape != (h, w):
            raise ValueError(f"mask has shape {array.shape}; expected (height, width) = {(h, w)}")
        pw, ph = self.processed_size
        sx, sy = self.scale
        # Sample the original mask at each processed pixel's centre (nearest neighbour).
        xs = np.floor(self.crop_box[0] + (np.arange(pw) + 0.5) / sx).astype(int)
        ys = np.floor(self.crop_box[1] + (np.arange(ph) + 0.5) / sy).astype(int)
        inside_x, inside_y = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
        out = np.zeros((ph, pw), dtype=bool)
        out[np.ix_(inside_y, inside_x)] = array[np.ix_(ys[inside_y], xs[inside_x])]
        seen = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = self.crop_box
        seen[
            max(0, math.ceil(y0)) : max(0, math.floor(y1)), max(0, math.ceil(x0)) : max(0, math.floor(x1))
        ] = True
        return CorrectedSeg(out, bool((array & ~seen).any()))

    def calc_overlay(self, *, bbox: Box | None = None, mask: Any | None = None) -> PatchOverlap:
        """The patches a box or a mask (in original-image coordinates) overlaps, row-major.

        A box's fractions are exact areas: they sum to the clamped box's area in cell units. A mask's
        fraction is the share of the cell's processed pixels that are foreground.

        Raises:
            ValueError: not exactly one of ``bbox`` and ``mask`` was given.
        """
        if (bbox is None) == (mask is None):
            raise ValueError("calc_overlay takes exactly one of bbox=... or mask=...")
        cell = self.effective_patch_size
        indices: list[int] = []
        fractions: list[float] = []
        if bbox is not None:
            corrected = self.correct_bbox(bbox).bbox
            x0, y0, x1, y1 = (value / cell for value in corrected)
            if x1 <= x0 or y1 <= y0:
                return PatchOverlap([], [])
            for row in range(max(0, math.floor(y0)), min(self.grid_h, math.ceil(y1))):
                dy = min(y1, row + 1) - max(y0, row)
                for col in range(max(0, math.floor(x0)), min(self.grid_w, math.ceil(x1))):
                    covered = dy * (min(x1, col + 1) - max(x0, col))
                    if covered > 0:
                        indices.append(row * self.grid_w + col)
                        fractions.append(float(covered))
            return PatchOverlap(indices, fractions)
        seg = self.correct_seg(mask).mask[: self.grid_h * cell, : self.grid_w * cell]
        shares = seg.reshape(self.grid_h, cell, self.grid_w, cell).mean(axis=(1, 3))
        for index, share in enumerate(shares.reshape(-1)):
            if share > 0:
                indices.append(index)
                fractions.append(float(share))
        return PatchOverlap(indices, fractions)

    # --------------------------------------------------------------- drawing
    def patch_overview(
        self,
        labels: LabelMode = "every_10",
        start_number: int = 0,
        highlight: Any = None,
        highlight_color: tuple[int, int, int, int] = DEFAULT_HIGHLIGHT,
    ) -> Image.Image:
        """The processed image with a red patch grid, numbered cells and tinted highlights.

        See :func:`vlmforge.analysis.patch_overview.draw_patch_overview`.
        """
        return draw_patch_overview(
            self.image,
            self.grid_h,
            self.grid_w,
            self.effective_patch_size,
            labels=labels,
            start_number=start_number,
            highlight=highlight,
            highlight_color=highlight_color,
        )


def _check_box(bbox: Any) -> Box:
    try:
        x0, y0, x1, y1 = (float(value) for value in bbox)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bbox must be four numbers (x0, y0, x1, y1), got {bbox!r}") from error
    if x1 < x0 or y1 < y0:
        raise ValueError(f"bbox {bbox!r} has x1 < x0 or y1 < y0")
    return x0, y0, x1, y1


# ------------------------------------------------------------------------------------ derivation
def _first_int(*values: Any) -> int | None:
    """The first positive number among ``values``; a square ``[n, n]`` pair (InternVL's patch size) or a
    square ``{height: n, width: n}`` size (Fuyu's image processor) is n."""
    for value in values:
        if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
            value = value[0]
        height, width = getattr(value, "height", None), getattr(value, "width", None)
        if isinstance(value, dict):
            height, width = value.get("height"), value.get("width")
        if height is not None and height == width:
            value = height
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def patch_and_merge(vlm: Any) -> tuple[int, int]:
    """The vision tower's patch size and its per-side token merge factor, read off processor and config.

    The patch size is the vision config's (the tower's own), else the processor's: an image processor's
    ``patch_size`` can mean something else (Cohere2-Vision's is the side of a tile's merged token grid).
    A VQ tokenizer without a patch size (Emu3) states its pixels per code instead (``spatial_factor`` on
    the image processor, an integer ``downsample_ratio`` on the processor); where nothing states it
    (Chameleon), the VQ encoder's downsampling is read off its config (:func:`vq_downsampling`).
    The merge factor is ``spatial_merge_size`` (Qwen-VL), ``scale_factor`` (Idefics3 pixel shuffle),
    ``downsample_factor`` (Cohere2-Vision) or the inverse of ``downsample_ratio`` (InternVL-style), else 1
    (:func:`image_info` then reads an unstated factor off the image-token count).

    Raises:
        UnsupportedGeometryError: neither the processor nor the vision config states a patch size.
    """
    hf_processor = vlm.processor
    image_processor = getattr(hf_processor, "image_processor", hf_processor)
    config = vlm.model.config
    vision = getattr(config, "vision_config", None)
    patch = _first_int(
        getattr(vision, "patch_size", None),
        # A model without a vision config that cuts patches itself (Fuyu's linear patch embedding).
        getattr(config, "patch_size", None) if vision is None else None,
        getattr(image_processor, "patch_size", None),
        getattr(hf_processor, "patch_size", None),
        # A VQ tokenizer's codes (Emu3): one code per ``spatial_factor`` / ``downsample_ratio`` pixels.
        getattr(image_processor, "spatial_factor", None),
        _int_only(getattr(hf_processor, "downsample_ratio", None)),
        # Stated by neither (Chameleon): the VQ encoder's own downsampling.
        vq_downsampling(getattr(config, "vq_config", None)),
    )
    if patch is None:
        raise UnsupportedGeometryError(
            f"{type(vlm.model).__name__}: no patch_size on the image processor, the processor or the "
            "vision config",
            "no_grid",
        )
    return patch, _stated_merge(vlm) or 1


def vq_downsampling(vq_config: Any) -> int | None:
    """Pixels per code side of a VQGAN-style encoder (taming-transformers layout, Chameleon / Emu3), or None.

    Its encoder has one resolution level per ``channel_multiplier`` entry and halves the resolution
    after each level but the last: one code per ``2 ** (levels - 1)`` pixels per side.
    """
    multipliers = getattr(vq_config, "channel_multiplier", None)
    if not isinstance(multipliers, (list, tuple)) or len(multipliers) < 2:
        return None
    return 2 ** (len(multipliers) - 1)


def _int_only(value: Any) -> int | None:
    """``value`` where it is a whole number above 1 (a pixel factor, not InternVL's float ratio)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else None


def _stated_merge(vlm: Any) -> int | None:
    """The per-side token merge factor the processor or the config states, or None (see above)."""
    image_processor = getattr(vlm.processor, "image_processor", vlm.processor)
    config = vlm.model.config
    vision = getattr(config, "vision_config", None)
    ratio = getattr(config, "downsample_ratio", None)
    return _first_int(
        getattr(image_processor, "merge_size", None),
        getattr(vision, "spatial_merge_size", None),
        getattr(config, "scale_factor", None),
        getattr(config, "downsample_factor", None),
        round(1 / ratio) if isinstance(ratio, float) and 0 < ratio < 1 else None,
    )


def _merge_from_token_count(patch_grid: tuple[int, int], num_tokens: int) -> int | None:
    """The merge factor ``m`` that makes the ``(cols, rows)`` patch grid exactly ``num_tokens`` tokens.

    For a tower that downsamples without stating a factor (GOT-OCR2's convolutional projector): the
    tokens must tile the patch grid in whole ``m x m`` blocks, and at most one ``m`` can (the token
    count falls with ``m**2``), so this finds the factor or proves there is none.
    """
    cols, rows = patch_grid
    if num_tokens <= 0 or (cols * rows) % num_tokens:
        return None
    merge = math.isqrt((cols * rows) // num_tokens)
    if merge < 2 or merge * merge * num_tokens != cols * rows or cols % merge or rows % merge:
        return None
    return merge


#: Config keys that state a resampler's fixed number of learned latent queries (perceiver resamplers:
#: Idefics2's ``resampler_n_latents``; BLIP-2 / InstructBLIP Q-Formers: ``num_query_tokens``).
_LATENT_COUNT_KEY = re.compile(r"(^|_)(n_latents|num_latents|num_query_tokens|query_num|num_queries)$")


def resampler_latents(config: Any) -> tuple[str, int] | None:
    """``(dotted key, count)`` of the learned latent queries a resampler in ``config`` declares, or None.

    Searched by key name through the config and its sub-configs (a resampler usually has its own:
    ``perceiver_config``, ``qformer_config``), because a resampler's token count is a hyper-parameter of
    the model, not something the image processor knows.
    """
    found: list[tuple[str, int]] = []

    def walk(values: Any, prefix: str) -> None:
        if not isinstance(values, dict):
            return
        for key, value in values.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif _LATENT_COUNT_KEY.search(str(key)) and isinstance(value, int) and value > 0:
                found.append((f"{prefix}{key}", int(value)))

    to_dict = getattr(config, "to_dict", None)
    walk(to_dict() if callable(to_dict) else getattr(config, "__dict__", {}), "")
    return found[0] if found else None


def image_info(vlm: Any, image: Any) -> ImageInfo:
    """The geometry of ``image`` as ``vlm`` (a :class:`vlmforge.HookedVLM`) sees it.

    Runs the family's real processor on the image and reads the geometry off its outputs and settings
    (see the module docstring). Works for every family whose image tokens form one grid over one view
    of the image; the result is cross-checked against the image tokens in ``input_ids``.

    Raises:
        UnsupportedGeometryError: the image tokens are not one grid (``kind`` says why: ``"tiles"`` where
            the processor splits the image into several views, e.g. SmolVLM / Idefics3 or LLaVA-NeXT's
            any-resolution tiles; ``"resampler"`` where they are a resampler's learned latents, e.g.
            Idefics2's perceiver; ``"cross_attention"`` where the image reaches the decoder through
            cross-attention layers or blocks, e.g. Mllama, IDEFICS), or the processor's outputs do not match
            the grid.
    """
    original = load_image(image)
    family = vlm.adapter.spec.name
    through = vlm.adapter.image_cross_attention()
    if through is not None:
        # The prompt only marks where the image is; its features are the keys and values of cross-attention.
        raise UnsupportedGeometryError(
            f"{family}: images reach the decoder through {through}, not as image tokens: no token of the "
            "prompt is an image patch, so image geometry does not apply",
            "cross_attention",
        )
    patch, merge = patch_and_merge(vlm)
    inputs = vlm.prompt_processor.prepare_inputs("Describe the image.", original)
    is_image = vlm.adapter.image_token_mask(inputs)
    num_tokens = int(is_image.sum())
    grid_thw = inputs.get("image_grid_thw")
    width, height = original.size
    if grid_thw is not None:
        frames, rows, cols = (int(v) for v in torch.as_tensor(grid_thw)[0])
        if frames != 1 or rows % merge or cols % merge:
            raise UnsupportedGeometryError(
                f"{family}: image_grid_thw {(frames, rows, cols)} is not one frame of whole merge blocks "
                f"(merge {merge})",
                "layout",
            )
        processed = (cols * patch, rows * patch)
        crop_box: Box = (0.0, 0.0, float(width), float(height))
    else:
        pixels = inputs.get("pixel_values")
        shapes = inputs.get("spatial_shapes")
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 3:
            # Flattened patches, [views, patches, patch pixels] (NaFlex-style towers, Molmo2's crops).
            if pixels.shape[0] != 1:
                raise UnsupportedGeometryError(
                    f"{family}: the processor splits one {width}x{height} image into {pixels.shape[0]} views "
                    f"(tiles or crops: pixel_values {tuple(pixels.shape)}, {num_tokens} image tokens), so "
                    "its image tokens are not one patch grid over one view; image geometry covers "
                    "single-view families",
                    "tiles",
                )
            if shapes is None:
                raise UnsupportedGeometryError(
                    f"{family}: the processor returns flattened patches {tuple(pixels.shape)} without "
                    "spatial_shapes, so the patch grid cannot be read off it",
                    "no_grid",
                )
            rows, cols = (int(v) for v in torch.as_tensor(shapes)[0])
            processed = (cols * patch, rows * patch)
            crop_box = (0.0, 0.0, float(width), float(height))
        elif isinstance(pixels, torch.Tensor) and pixels.dim() == 2:
            # One image's patches as a flat [patches, patch pixels] list with no image shape (Fuyu): the
            # grid is the image tokens' rows, one run per row of patches (a row-break token between runs).
            processed, crop_box = _flat_patch_grid(vlm, inputs, original, patch, int(pixels.shape[0]))
        else:
            if not isinstance(pixels, torch.Tensor) or pixels.dim() not in (4, 5):
                raise UnsupportedGeometryError(
                    f"{family}: the processor returns no image_grid_thw and no [images, (frames,) C, H, W] "
                    "pixel tensor, so the patch grid cannot be read off it",
                    "no_grid",
                )
            # One image's views: [1, views, C, H, W], or [views, C, H, W] (InternVL / GOT-OCR2 crops).
            frames = pixels.shape[1] if pixels.dim() == 5 else pixels.shape[0]
            if frames != 1:
                raise UnsupportedGeometryError(
                    f"{family}: the processor splits one {width}x{height} image into {frames} views (tiles "
                    f"plus a global image: pixel_values {tuple(pixels.shape)}, {num_tokens} image tokens), "
                    "so its image tokens are not one patch grid over one view; image geometry covers "
                    "single-view families",
                    "tiles",
                )
            processed = (int(pixels.shape[-1]), int(pixels.shape[-2]))
            crop_box = _crop_box(vlm, original, processed)
    if _stated_merge(vlm) is None:
        merge = _merge_from_token_count((processed[0] // patch, processed[1] // patch), num_tokens) or merge
    grid_w, grid_h = processed[0] // (patch * merge), processed[1] // (patch * merge)
    whole_cells = (grid_w * patch * merge, grid_h * patch * merge) == processed
    latents = resampler_latents(vlm.model.config)
    if grid_w * grid_h != num_tokens and latents is not None and latents[1] == num_tokens:
        key, count = latents
        raise UnsupportedGeometryError(
            f"{family}: the {num_tokens} image tokens are the learned latent queries of a resampler "
            f"({key}={count} in the model config), each attending over the whole "
            f"{processed[1] // patch}x{processed[0] // patch} patch grid of the vision tower: no image token "
            "stands for one region of the image, so there is no patch grid to map onto the image",
            "resampler",
        )
    if whole_cells and num_tokens == grid_h * (grid_w + 1):
        raise UnsupportedGeometryError(
            f"{family}: the {num_tokens} image tokens are the {grid_h}x{grid_w} grid of a "
            f"{processed[0]}x{processed[1]} processed image in {patch * merge}px cells plus one row "
            f"separator token per row ({grid_h} rows of {grid_w} + 1): image token r * grid_w + c is not "
            "cell (r, c), so the grid does not index the image tokens",
            "layout",
        )
    if grid_w * grid_h != num_tokens or not whole_cells:
        raise UnsupportedGeometryError(
            f"{family}: a {processed[0]}x{processed[1]} processed image in {patch * merge}px cells is a "
            f"{grid_h}x{grid_w} grid, but the processor put {num_tokens} image tokens in input_ids "
            "(extra tokens such as a CLS token, or a layout that is not one grid)",
            "layout",
        )
    rows = _run_lengths(is_image[0])
    if len(rows) > 1 and rows != [grid_w] * grid_h:
        raise UnsupportedGeometryError(
            f"{family}: the {num_tokens} image tokens lie in {len(rows)} runs of {rows} tokens, which are "
            f"not the {grid_h} rows of {grid_w} cells of the grid: image token r * grid_w + c need not be "
            "cell (r, c)",
            "layout",
        )
    view = _processed_view(original, crop_box, processed, _pad_color(vlm))
    return ImageInfo(view, (width, height), processed, crop_box, patch, merge, grid_h, grid_w, num_tokens)


def _flat_patch_grid(
    vlm: Any, inputs: Any, original: Image.Image, patch: int, patches: int
) -> tuple[tuple[int, int], Box]:
    """(processed size, crop box) of an image the processor hands over as ``patches`` flat patches.

    The patch grid is the image tokens' runs (rows of equal length); the processor cuts it from the image
    resized to fit its ``size`` (never enlarged) and padded right and bottom to whole patches, so the box
    reaches past the image into that padding.
    """
    family = vlm.adapter.spec.name
    rows = _run_lengths(vlm.adapter.image_token_mask(inputs)[0])
    if not rows or len(set(rows)) != 1 or len(rows) * rows[0] != patches:
        raise UnsupportedGeometryError(
            f"{family}: {patches} flat patches but image-token runs of {rows}: no rows x columns grid",
            "layout",
        )
    grid_h, grid_w = len(rows), rows[0]
    width, height = original.size
    image_processor = getattr(vlm.processor, "image_processor", vlm.processor)
    size = getattr(image_processor, "size", None)
    target = (getattr(size, "width", None), getattr(size, "height", None))
    if isinstance(size, dict):
        target = (size.get("width"), size.get("height"))
    scale = min(1.0, *(t / s for t, s in zip(target, (width, height)) if isinstance(t, int)))
    if (math.ceil(width * scale / patch), math.ceil(height * scale / patch)) != (grid_w, grid_h):
        raise UnsupportedGeometryError(
            f"{family}: a {width}x{height} image fitted into {target} is not a {grid_h}x{grid_w} grid of "
            f"{patch}px patches",
            "layout",
        )
    processed = (grid_w * patch, grid_h * patch)
    return processed, (0.0, 0.0, processed[0] / scale, processed[1] / scale)


def _run_lengths(is_image: torch.Tensor) -> list[int]:
    """The lengths of the runs of consecutive image tokens in one row's ``input_ids == image_token``."""
    positions = is_image.nonzero().flatten()
    if positions.numel() == 0:
        return []
    breaks = ((positions[1:] - positions[:-1]) != 1).nonzero().flatten() + 1
    bounds = [0, *breaks.tolist(), positions.numel()]
    return [end - start for start, end in itertools.pairwise(bounds)]


def _crop_box(vlm: Any, image: Image.Image, processed: tuple[int, int]) -> Box:
    """The region of the original image that a resize (+ pad, + centre crop) maps onto ``processed``."""
    image_processor = getattr(vlm.processor, "image_processor", None)
    width, height = image.size
    left = top = 0.0
    base_w, base_h = float(width), float(height)
    if getattr(image_processor, "do_pad", False) and hasattr(image_processor, "pad_to_square"):
        resized = _resized_before_padding(image_processor, image, processed)
        if resized is not None:
            return resized
        # Pad-to-square (LLaVA's expand2square): the square centred on the image is what gets resized.
        side = max(width, height)
        left, top = -float((side - width) // 2), -float((side - height) // 2)
        base_w = base_h = float(side)
    if not getattr(image_processor, "do_center_crop", False):
        return (left, top, left + base_w, top + base_h)
    # The resized size, before the crop, is what the processor itself produces with the crop switched off.
    uncropped = image_processor(images=[image], do_center_crop=False, return_tensors="pt")["pixel_values"]
    resized_h, resized_w = (int(v) for v in uncropped.shape[-2:])
    crop_w, crop_h = processed
    if crop_w > resized_w or crop_h > resized_h:
        raise UnsupportedGeometryError(
            f"the centre crop {crop_w}x{crop_h} is larger than the resized image {resized_w}x{resized_h} "
            "(the processor pads it): not supported"
        )
    # transformers' centre-crop rule: int((size - crop) / 2) from the top-left.
    crop_top, crop_left = int((resized_h - crop_h) / 2.0), int((resized_w - crop_w) / 2.0)
    sx, sy = base_w / resized_w, base_h / resized_h
    return (
        left + crop_left * sx,
        top + crop_top * sy,
        left + (crop_left + crop_w) * sx,
        top + (crop_top + crop_h) * sy,
    )


def _resized_before_padding(
    image_processor: Any, image: Image.Image, processed: tuple[int, int]
) -> Box | None:
    """The crop box of a processor that resizes first (keeping the aspect ratio) and then pads the
    result to a square (DeepSeek-VL), or None for one that pads first (LLaVA's expand2square).

    The order shows in the processor's own output with padding switched off: a resize-first processor
    then returns the non-square resized image, whose size gives the scale and the padding exactly
    (transformers' ``pad_to_square`` centres it at ``(side - size) // 2``); rounding the resized side
    makes this differ from padding first by up to a pixel, which is what a patch box must not miss.
    """
    width, height = image.size
    if width == height:
        return None
    try:
        unpadded = image_processor(images=[image], do_pad=False, return_tensors="pt")["pixel_values"]
        resized_h, resized_w = (int(v) for v in unpadded.shape[-2:])
    except (KeyError, ValueError, TypeError):
        # Some processors cannot run unpadded (DeepSeek-VL-Hybrid's regroups its outputs by shape and
        # fails): read the resized image's extent off the padded output instead, as the rows and
        # columns that are not all padding.
        extent = _content_extent(image_processor, image)
        if extent is None:
            return None
        resized_w, resized_h = extent
    side = max(resized_w, resized_h)
    if resized_w == resized_h or (side, side) != processed:
        return None
    left, top = (side - resized_w) // 2, (side - resized_h) // 2
    sx, sy = width / resized_w, height / resized_h
    return (-left * sx, -top * sy, (side - left) * sx, (side - top) * sy)


def _content_extent(image_processor: Any, image: Image.Image) -> tuple[int, int] | None:
    """``(width, height)`` of the part of the processor's padded output that is not padding.

    Padding is one constant value per channel (the background colour, normalised); the first and last
    pixel of the middle row / column that differ from the corner pixel bound the content.
    """
    pixels = image_processor(images=[image], return_tensors="pt")["pixel_values"]
    pixels = pixels.reshape(-1, *pixels.shape[-3:])[0].float()  # [C, H, W]
    pad = pixels[:, 0, 0][:, None]
    height, width = pixels.shape[-2:]
    columns = (pixels[:, height // 2, :] - pad).abs().amax(0) > 1e-6
    rows = (pixels[:, :, width // 2] - pad).abs().amax(0) > 1e-6
    if not columns.any() or not rows.any():
        return None
    xs, ys = columns.nonzero().flatten(), rows.nonzero().flatten()
    return int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)


def _pad_color(vlm: Any) -> tuple[int, int, int]:
    """The colour a pad-to-square fills with: the processor's mean colour (it normalises to zero).

    The mean is in rescaled units (pixel x ``rescale_factor``: 1/255 mostly, Chameleon's 1/128).
    """
    image_processor = getattr(vlm.processor, "image_processor", None)
    mean = getattr(image_processor, "image_mean", None)
    rescale = getattr(image_processor, "rescale_factor", None) or 1 / 255
    if isinstance(mean, list | tuple) and len(mean) == 3:
        red, green, blue = (min(255, int(value / rescale)) for value in mean)
        return red, green, blue
    return (0, 0, 0)


def _processed_view(
    image: Image.Image, crop_box: Box, processed: tuple[int, int], pad_color: tuple[int, int, int]
) -> Image.Image:
    """The crop region of ``image`` resized to ``processed`` (``pad_color`` where the crop box pads)."""
    x0, y0, x1, y1 = crop_box
    if x0 >= 0 and y0 >= 0 and x1 <= image.width and y1 <= image.height:
        return image.resize(processed, Image.Resampling.BICUBIC, box=crop_box)
    left, top = math.floor(x0), math.floor(y0)
    canvas = Image.new("RGB", (math.ceil(x1) - left, math.ceil(y1) - top), pad_color)
    canvas.paste(image, (-left, -top))
    return canvas.resize(processed, Image.Resampling.BICUBIC)
