"""Draw the image-token grid over the processed image: red grid lines, cell numbers, tinted highlights."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from vlmforge.analysis.geometry import ImageInfo

LabelMode = Literal["all", "every_10", "none"]
DEFAULT_HIGHLIGHT = (255, 200, 0, 100)
GRID_COLOR = (255, 0, 0)


def _labelled(index: int, total: int, labels: LabelMode) -> bool:
    if labels == "all":
        return True
    if labels == "every_10":
        return index % 10 == 0 or index == total - 1
    return False


def draw_patch_overview(
    image: Image.Image,
    grid_h: int,
    grid_w: int,
    cell: int,
    *,
    labels: LabelMode = "every_10",
    start_number: int = 0,
    highlight: Iterable[int] | None = None,
    highlight_color: tuple[int, int, int, int] = DEFAULT_HIGHLIGHT,
) -> Image.Image:
    """A copy of ``image`` with the ``grid_h`` x ``grid_w`` grid of ``cell``-pixel cells drawn on it.

    Highlighted cells (row-major indices) are alpha-blended with ``highlight_color`` first; then a
    one-pixel red line is drawn on every cell boundary (the right / bottom border on the last pixel
    column / row); then cells are numbered row-major from ``start_number`` at their top-left corner:
    every cell (``"all"``), every tenth cell and the last (``"every_10"``) or none (``"none"``).

    Raises:
        ValueError: an unknown ``labels`` mode or a highlight index outside the grid.
    """
    if labels not in ("all", "every_10", "none"):
        raise ValueError(f"labels must be 'all', 'every_10' or 'none', got {labels!r}")
    total = grid_h * grid_w
    canvas = image.convert("RGBA")
    chosen = sorted(set(int(i) for i in highlight)) if highlight is not None else []
    if chosen:
        bad = [i for i in chosen if not 0 <= i < total]
        if bad:
            raise ValueError(f"highlight indices {bad} are outside the {grid_h}x{grid_w} grid")
        tint = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        tint_draw = ImageDraw.Draw(tint)
        for index in chosen:
            row, col = divmod(index, grid_w)
            box = (col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1)
            tint_draw.rectangle(box, fill=tuple(highlight_color))
        canvas = Image.alpha_composite(canvas, tint)
    draw = ImageDraw.Draw(canvas)
    width, height = grid_w * cell, grid_h * cell
    for col in range(grid_w + 1):
        x = min(col * cell, width - 1)
        draw.line([(x, 0), (x, height - 1)], fill=GRID_COLOR, width=1)
    for row in range(grid_h + 1):
        y = min(row * cell, height - 1)
        draw.line([(0, y), (width - 1, y)], fill=GRID_COLOR, width=1)
    if labels != "none":
        font = ImageFont.load_default(size=max(6, min(14, cell // 2)))
        for index in range(total):
            if _labelled(index, total, labels):
                row, col = divmod(index, grid_w)
                draw.text(
                    (col * cell + 2, row * cell + 1),
                    str(start_number + index),
                    fill=(255, 255, 255),
                    font=font,
                    stroke_width=1,
                    stroke_fill=(0, 0, 0),
                )
    return canvas.convert("RGB")


def generate_patch_overview(
    info: ImageInfo,
    labels: LabelMode = "every_10",
    start_number: int = 0,
    highlight: Iterable[int] | None = None,
    highlight_color: tuple[int, int, int, int] = DEFAULT_HIGHLIGHT,
) -> Image.Image:
    """The processed image of ``info`` with its patch grid drawn (see :func:`draw_patch_overview`)."""
    return info.patch_overview(
        labels=labels, start_number=start_number, highlight=highlight, highlight_color=highlight_color
    )
