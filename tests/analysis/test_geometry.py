"""Image geometry: derived from each family's processor, checked against what the processor really does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from analysis_helpers import check_declared_not_applicable, gradient_image, processor_pixels
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoConfig

from vlmforge.analysis import (
    ImageInfo,
    UnsupportedGeometryError,
    generate_patch_overview,
    image_info,
)
from vlmforge.analysis.geometry import vq_downsampling
from vlmforge.core import HookedVLM

# Landscape, portrait, extreme and square, small and larger than the tiny processors' targets.
SIZES = [(64, 48), (100, 300), (333, 77), (40, 40)]


def _image_tokens(vlm, image: Image.Image) -> int:
    inputs = vlm.prepare_messages("Which colours are there?", image)
    return int(vlm.adapter.image_token_mask(inputs).sum())


def test_grid_cells_are_the_image_tokens(family, tiny) -> None:
    """For every family and image shape: one grid cell per image token, or a clear refusal that says why."""
    vlm = tiny(family)
    for size in SIZES:
        image = gradient_image(*size)
        try:
            info = image_info(vlm, image)
        except UnsupportedGeometryError as error:
            # Refused only where the image tokens really are not one grid (tiles, a resampler's latents).
            check_declared_not_applicable(vlm, image, error)
            continue
        assert info.grid_h * info.grid_w == info.num_patches == _image_tokens(vlm, image), (family, size)
        assert info.original_size == size
        assert info.image.size == info.processed_size
        assert info.processed_size == (
            info.grid_w * info.effective_patch_size,
            info.grid_h * info.effective_patch_size,
        )


@pytest.mark.parametrize("size", [(120, 40), (40, 120), (64, 48)])
def test_processed_view_is_what_the_processor_feeds_the_vision_tower(family, tiny, size) -> None:
    """``info.image`` (crop box + resize) matches the processor's own pixels: a misplaced crop would not."""
    vlm = tiny(family)
    image = gradient_image(*size)  # 3:1 and 1:3: a centre crop keeps only the middle third
    try:
        info = image_info(vlm, image)
    except UnsupportedGeometryError as error:
        pytest.skip(f"not applicable, declared: {check_declared_not_applicable(vlm, image, error)}")
    reference = processor_pixels(vlm, vlm.prepare_messages("x", image))
    ours = np.asarray(info.image, dtype=np.float64) / 255
    assert ours.shape == reference.shape
    # Per channel: a crop box 10 px off on a 120 px gradient is ~0.08 off in that channel.
    assert np.abs(ours - reference).mean(axis=(0, 1)).max() < 0.01, family
    # The whole image resized would be far off whenever the processor crops.
    if info.crop_box != (0, 0, *size):
        whole = np.asarray(image.resize(info.processed_size), dtype=np.float64) / 255
        assert np.abs(whole - reference).mean(axis=(0, 1)).max() > 0.03


def test_pad_to_square_processors(family, tiny) -> None:
    """A processor that pads to square first (LLaVA's ``do_pad``): the crop box reaches past the image."""
    base = tiny(family)
    if not hasattr(getattr(base.processor, "image_processor", None), "pad_to_square"):
        pytest.skip(f"{family}: the image processor cannot pad to square")
    processor = copy.deepcopy(base.processor)  # the cached tiny model's processor stays as it is
    processor.image_processor.do_pad = True
    vlm = HookedVLM(base.model, processor, adapter=base.adapter)
    image = gradient_image(120, 40)
    try:
        info = image_info(vlm, image)
    except UnsupportedGeometryError as error:
        # A processor that pads each view but splits the image into several (LLaVA-OneVision's tiles).
        pytest.skip(f"not applicable, declared: {check_declared_not_applicable(vlm, image, error)}")
    x0, y0, x1, y1 = info.crop_box
    assert (x0, x1) == (0, 120) and y0 < 0 < 40 < y1
    # Padding first (LLaVA's expand2square) the box is the 120x120 square; resizing first (DeepSeek-VL,
    # whose resize may also stretch a short side up to a minimum) it is the resized image's padding
    # scaled back: the comparison with the processor's own pixels below pins either down.
    reference = processor_pixels(vlm, vlm.prepare_messages("x", image))
    assert np.abs(np.asarray(info.image, dtype=np.float64) / 255 - reference).mean(axis=(0, 1)).max() < 0.01
    # The padding carries no content: a box reaching into it is clipped to the image.
    whole, beyond = info.correct_bbox((0, 0, 120, 40)), info.correct_bbox((0, -50, 120, 90))
    assert whole.bbox == beyond.bbox and not whole.clipped and beyond.clipped


def _synthetic() -> ImageInfo:
    """A LLaVA-like geometry: the middle 200x200 of a 300x200 image, resized to 28x28, 2x2 cells of 14."""
    return ImageInfo(
        Image.new("RGB", (28, 28), (128, 128, 128)),
        (300, 200),
        (28, 28),
        (50.0, 0.0, 250.0, 200.0),
        14,
        1,
        2,
        2,
    )


def test_correct_bbox_maps_clamps_and_flags() -> None:
    info = _synthetic()
    inside = info.correct_bbox((50, 0, 150, 100))
    assert inside.bbox == pytest.approx((0, 0, 14, 14)) and not inside.clipped
    partial = info.correct_bbox((0, 100, 100, 300))  # left of the crop and below the image
    assert partial.bbox == pytest.approx((0, 14, 7, 28)) and partial.clipped
    outside = info.correct_bbox((260, 10, 290, 20))
    assert outside.bbox == (0, 0, 0, 0) and outside.clipped
    with pytest.raises(ValueError):
        info.correct_bbox((10, 10, 5, 20))


coordinate = st.floats(min_value=-100, max_value=400, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(coordinate, coordinate, coordinate, coordinate)
def test_bbox_overlay_fractions_sum_to_the_box_area(a: float, b: float, c: float, d: float) -> None:
    info = _synthetic()
    box = (min(a, c), min(b, d), max(a, c), max(b, d))
    corrected = info.correct_bbox(box)
    x0, y0, x1, y1 = corrected.bbox
    assert 0 <= x0 <= x1 <= 28 and 0 <= y0 <= y1 <= 28
    within = box[0] >= 50 and box[2] <= 250 and box[1] >= 0 and box[3] <= 200
    assert corrected.clipped == (not within)
    overlap = info.calc_overlay(bbox=box)
    cell = info.effective_patch_size
    assert sum(overlap.overlap_fractions) == pytest.approx((x1 - x0) * (y1 - y0) / cell**2, abs=1e-9)
    assert overlap.patch_indices == sorted(overlap.patch_indices)
    assert all(0 <= i < info.num_patches for i in overlap.patch_indices)
    assert all(0 < f <= 1 + 1e-12 for f in overlap.overlap_fractions)


def test_overlay_of_a_mask_and_argument_checks() -> None:
    info = _synthetic()
    mask = np.zeros((200, 300), dtype=bool)
    mask[100:200, 150:250] = True  # exactly the bottom-right cell in original pixels
    overlap = info.calc_overlay(mask=mask)
    assert overlap.patch_indices == [3] and overlap.overlap_fractions == pytest.approx([1.0])
    seg = info.correct_seg(mask)
    assert seg.mask.shape == (28, 28) and seg.mask[14:, 14:].all() and not seg.mask[:14].any()
    assert not seg.clipped
    mask[0, 0] = True  # outside the crop region
    assert info.correct_seg(mask).clipped
    with pytest.raises(ValueError):
        info.correct_seg(np.zeros((10, 10), dtype=bool))
    for arguments in ({}, {"bbox": (0, 0, 1, 1), "mask": mask}):
        with pytest.raises(ValueError, match="exactly one"):
            info.calc_overlay(**arguments)


def _grid_info(grid_h: int = 3, grid_w: int = 4, cell: int = 28) -> ImageInfo:
    size = (grid_w * cell, grid_h * cell)
    gray = Image.new("RGB", size, (128, 128, 128))
    return ImageInfo(gray, size, size, (0.0, 0.0, *map(float, size)), cell, 1, grid_h, grid_w)


def test_patch_overview_draws_grid_and_tints_highlights() -> None:
    info = _grid_info()
    overview = np.asarray(generate_patch_overview(info, labels="none", highlight=[5]))
    assert overview.shape == (84, 112, 3)
    red = (255, 0, 0)
    for x in (0, 28, 56, 84, 111):  # every cell boundary, the right border on the last column
        assert (overview[:, x] == red).all(), x
    for y in (0, 28, 56, 83):
        assert (overview[y] == red).all(), y
    # Cell 5 is row 1, column 1: gray alpha-blended with (255, 200, 0) at alpha 100.
    expected = np.round(np.array([128, 128, 128]) * (155 / 255) + np.array([255, 200, 0]) * (100 / 255))
    assert np.abs(overview[42, 42].astype(int) - expected).max() <= 1
    assert (overview[10, 10] == 128).all() and (overview[70, 100] == 128).all()
    assert (np.asarray(info.image) == 128).all()  # the overview is drawn on a copy


@pytest.mark.parametrize(("labels", "numbered"), [("all", set(range(12))), ("every_10", {0, 10, 11})])
def test_patch_overview_labels(labels: str, numbered: set[int]) -> None:
    info = _grid_info()
    overview = np.asarray(info.patch_overview(labels=labels, start_number=100))
    for index in range(12):
        row, col = divmod(index, 4)
        corner = overview[row * 28 + 2 : row * 28 + 14, col * 28 + 2 : col * 28 + 20]
        assert (corner != 128).any() == (index in numbered), index
    with pytest.raises(ValueError):
        info.patch_overview(labels="some")
    with pytest.raises(ValueError, match="outside"):
        info.patch_overview(highlight=[12])


def test_patch_overview_of_a_real_model(family, tiny) -> None:
    vlm = tiny(family)
    image = gradient_image(90, 60)
    try:
        info = image_info(vlm, image)
    except UnsupportedGeometryError as error:
        pytest.skip(f"not applicable, declared: {check_declared_not_applicable(vlm, image, error)}")
    overview = np.asarray(info.patch_overview(labels="none", highlight=[info.num_patches - 1]))
    cell = info.effective_patch_size
    width, height = info.processed_size
    assert overview.shape[:2] == (height, width)
    red = (255, 0, 0)
    # Every cell boundary is a red line (the right and bottom borders on the last pixel), whatever the
    # grid's size: a processor may leave a small image a single cell.
    for x in (*range(0, width, cell), width - 1):
        assert (overview[:, x] == red).all(), x
    for y in (*range(0, height, cell), height - 1):
        assert (overview[y] == red).all(), y
    # The highlighted last cell is tinted: its centre differs from the processed image there.
    centre_y = (info.grid_h - 1) * cell + cell // 2
    centre_x = (info.grid_w - 1) * cell + cell // 2
    assert (overview[centre_y, centre_x] != np.asarray(info.image)[centre_y, centre_x]).any()


def test_image_tokens_in_row_runs_are_the_grid_and_other_runs_are_refused(tiny, monkeypatch) -> None:
    """Pixtral (Mistral3) puts ``[IMG_BREAK]`` after every row of image tokens: its runs are the grid's
    rows, so the grid indexes the image tokens. A split that is not one run per row is refused."""
    vlm = tiny("mistral3")
    image = gradient_image(56, 56)
    info = image_info(vlm, image)
    ids = vlm.prepare_messages("Describe the image.", image)["input_ids"][0]
    is_image = (ids == vlm.adapter.get_image_token_id()).tolist()
    starts = sum(1 for i, flag in enumerate(is_image) if flag and (i == 0 or not is_image[i - 1]))
    assert (info.grid_h, info.grid_w) == (2, 2) and starts == 2  # two runs: the two rows

    prepare = vlm.prompt_processor.prepare_inputs

    def shifted_break(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        row = inputs["input_ids"][0]
        first = int((row == vlm.adapter.get_image_token_id()).nonzero()[0])
        # The first row's break moves one token left: runs of 1 and 3 image tokens, not two rows of 2.
        row[first + 1], row[first + 2] = row[first + 2].clone(), row[first + 1].clone()
        return inputs

    monkeypatch.setattr(vlm.prompt_processor, "prepare_inputs", shifted_break)
    with pytest.raises(UnsupportedGeometryError, match=r"2 runs of \[1, 3\] tokens") as error:
        image_info(vlm, image)
    assert error.value.kind == "layout"


def test_vq_encoder_downsampling_is_read_off_its_config(tiny) -> None:
    """A VQ tokenizer that states no pixels per code (Chameleon): the encoder's levels give them."""
    # Emu3 states its factor on the image processor: the config's encoder agrees with it.
    emu3 = tiny("emu3")
    assert vq_downsampling(emu3.model.config.vq_config) == emu3.processor.image_processor.spatial_factor
    assert vq_downsampling(AutoConfig.for_model("chameleon").vq_config) == 16  # 512 px -> 32 x 32 codes
    assert vq_downsampling(None) is None
    chameleon = tiny("chameleon")
    info = image_info(chameleon, gradient_image(64, 48))
    tokens = chameleon.processor.image_processor.image_seq_length
    assert (info.grid_h, info.grid_w) == (2, 2) and info.grid_h * info.grid_w == tokens
