"""Per-position metadata of a prepared input: token labels, image-token positions and the patch grid.

:func:`extract_metadata` works for every family whose image geometry :func:`image_info` derives; the
``VLMMetadataExtractor`` static methods keep VLM Spectra's per-family entry points (they take the
Hugging Face model and processor, not a :class:`vlmforge.HookedVLM`).
"""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.analysis.geometry import ImageInfo, image_info
from vlmforge.analysis.vision import resolve_patch_params


def _single_row(input_ids: torch.Tensor) -> torch.Tensor:
    if input_ids.dim() == 2:
        if input_ids.shape[0] != 1:
            raise ValueError(f"metadata is per input: input_ids has batch {input_ids.shape[0]}, expected 1")
        return input_ids[0]
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be [1, seq] or [seq], got {tuple(input_ids.shape)}")
    return input_ids


def token_labels(
    tokenizer: Any, input_ids: torch.Tensor, image_token: int | torch.Tensor
) -> tuple[list[str], list[int]]:
    """One label per position (image tokens ``<IMG001>``, ``<IMG002>``... in order; others decoded).

    ``image_token`` is the image token id, or a bool mask of the image positions shaped like
    ``input_ids`` (an adapter's ``image_token_mask``, for a family without a single image token id).

    Returns:
        ``(labels, image_token_positions)``.
    """
    ids = _single_row(input_ids).tolist()
    if isinstance(image_token, torch.Tensor):
        is_image = _single_row(image_token).tolist()
    else:
        is_image = [token == image_token for token in ids]
    labels: list[str] = []
    positions: list[int] = []
    for position, token in enumerate(ids):
        if is_image[position]:
            positions.append(position)
            labels.append(f"<IMG{len(positions):03d}>")
        else:
            labels.append(tokenizer.decode([token]))
    return labels, positions


def _metadata(
    labels: list[str],
    positions: list[int],
    image_size: Any,
    grid_size: Any,
    patch_size: int,
    total_patches: int,
) -> dict[str, Any]:
    return {
        "token_labels": labels,
        "image_token_positions": positions,
        "num_image_tokens": len(positions),
        "image_size": image_size,
        "grid_size": grid_size,
        "patch_size": patch_size,
        "total_patches": total_patches,
    }


def extract_metadata(vlm: Any, inputs: Any, image: Any, info: ImageInfo | None = None) -> dict[str, Any]:
    """Metadata of one prepared input of ``vlm`` (a :class:`vlmforge.HookedVLM`), for any family.

    Keys: ``token_labels``, ``image_token_positions``, ``num_image_tokens``, ``image_size`` (processed
    ``(w, h)``), ``grid_size`` (``(grid_h, grid_w)``), ``patch_size`` (processed pixels per grid cell),
    ``total_patches``, plus ``image_info`` (the :class:`ImageInfo`).

    Raises:
        ValueError: a batch of more than one input, or image tokens in ``inputs`` that do not match
            the image's grid (``inputs`` prepared from another image).
        UnsupportedGeometryError: the family's image tokens are not one grid (see :func:`image_info`).
    """
    info = info or image_info(vlm, image)
    labels, positions = token_labels(
        vlm.prompt_processor.tokenizer, inputs["input_ids"], vlm.adapter.image_token_mask(inputs)
    )
    if len(positions) != info.num_patches:
        raise ValueError(
            f"inputs have {len(positions)} image tokens but the image is a {info.grid_h}x{info.grid_w} grid: "
            "prepare the inputs from this image"
        )
    result = _metadata(
        labels,
        positions,
        info.processed_size,
        (info.grid_h, info.grid_w),
        info.effective_patch_size,
        info.num_patches,
    )
    result["image_info"] = info
    return result


def _image_token_id(model: Any, processor: Any) -> int:
    for source in (model.config, getattr(model.config, "text_config", None), processor):
        for name in ("image_token_id", "image_token_index"):
            value = getattr(source, name, None)
            if isinstance(value, int):
                return value
    token = getattr(processor, "image_token", None)
    if token is not None:
        return int(processor.tokenizer.convert_tokens_to_ids(token))
    raise ValueError("neither the model config nor the processor names the image token id")


class VLMMetadataExtractor:
    """VLM Spectra's metadata entry points (Hugging Face model + processor), plus the generic one."""

    @staticmethod
    def extract_metadata(vlm: Any, inputs: Any, image: Any) -> dict[str, Any]:
        """Any family, from a :class:`vlmforge.HookedVLM` (see :func:`extract_metadata`)."""
        return extract_metadata(vlm, inputs, image)

    @staticmethod
    def extract_metadata_qwen(model: Any, processor: Any, inputs: Any, original_image: Any) -> dict[str, Any]:
        """Qwen-VL: the grid is ``image_grid_thw`` / merge size; ``image_size`` is the processed ``(w, h)``.

        Raises:
            ValueError: no ``image_grid_thw`` in ``inputs``, or a batch of more than one.
        """
        grid_thw = inputs.get("image_grid_thw")
        if grid_thw is None:
            raise ValueError("inputs have no image_grid_thw: extract_metadata_qwen needs Qwen-VL inputs")
        patch, merge = resolve_patch_params(
            getattr(model.config, "vision_config", None), getattr(model.config, "_name_or_path", None)
        )
        _, rows, cols = (int(v) for v in torch.as_tensor(grid_thw)[0])
        grid_h, grid_w = rows // merge, cols // merge
        labels, positions = token_labels(
            processor.tokenizer, inputs["input_ids"], _image_token_id(model, processor)
        )
        return _metadata(
            labels, positions, (cols * patch, rows * patch), (grid_h, grid_w), patch * merge, grid_h * grid_w
        )

    @staticmethod
    def extract_metadata_llava(
        model: Any,
        processor: Any,
        inputs: Any,
        original_image: Any,
        image_size: int = 336,
        patch_size: int = 14,
    ) -> dict[str, Any]:
        """LLaVA: a square ``image_size`` crop in ``patch_size`` patches (``grid_size`` is the side)."""
        grid = image_size // patch_size
        labels, positions = token_labels(
            processor.tokenizer, inputs["input_ids"], _image_token_id(model, processor)
        )
        return _metadata(labels, positions, image_size, grid, patch_size, grid * grid)
