"""Prompt preparation: one generic processor driven by the family's :class:`PromptFormat`.

It wraps the family's real Hugging Face processor (which owns the image preprocessing and the
chat template) and adds what interpretability work needs on top: a fixed message structure, an
assistant prefill, appended raw text, input validation, and left-padded batches so that the last
position of every row is the next-token position (what generation and logit lenses read).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmforge.core.chat_template import measure_continue_final_message, measure_image_in_message
from vlmforge.core.errors import InputError
from vlmforge.core.spec import FamilySpec, PromptFormat

ImageInput = Image.Image | str | Path


def load_image(image: ImageInput, *, index: int | None = None) -> Image.Image:
    """Return an RGB PIL image; RGBA / LA / P / L / CMYK / I;16 are converted (alpha dropped on white).

    Raises:
        InputError: the value is not an image or a readable image path, or has a zero side.
    """
    where = "" if index is None else f" (item {index})"
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as opened:
                image = opened.copy()
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read image{where} from {str(image)!r}: {error}") from error
    if not isinstance(image, Image.Image):
        raise InputError(f"image{where} must be a PIL.Image.Image or a path, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"image{where} has size {image.width}x{image.height}; both sides must be >= 1 px")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white rather than dropping alpha, so transparent pixels do not turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_task(task: Any, index: int | None = None) -> str:
    where = "" if index is None else f" (item {index})"
    if not isinstance(task, str):
        raise InputError(f"task{where} must be a string, got {type(task).__name__}")
    if not task.strip():
        raise InputError(f"task{where} is empty: give the question or instruction to ask about the image")
    return task


class VLMProcessor:
    """Family-aware prompt builder around a Hugging Face processor.

    Args:
        hf_processor: the family's ``ProcessorMixin`` (image processor + tokenizer + chat template).
        spec: the family spec whose :class:`PromptFormat` decides the message structure.
    """

    def __init__(self, hf_processor: Any, spec: FamilySpec) -> None:
        self.hf_processor = hf_processor
        self.spec = spec

    @cached_property
    def prompt_format(self) -> PromptFormat:
        """``spec.prompt`` with every ``None`` convention measured on this processor's chat template.

        A template that cannot tell (no image marker either way) gets the bare placeholder; one that
        cannot continue a final message gets the prefill appended to the rendered prompt.
        """
        fmt = self.spec.prompt
        changes: dict[str, bool] = {}
        if fmt.image_in_message is None:
            changes["image_in_message"] = bool(measure_image_in_message(self.hf_processor).value)
        if fmt.continue_final_message is None:
            changes["continue_final_message"] = bool(measure_continue_final_message(self.hf_processor).value)
        return dataclasses.replace(fmt, **changes)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.hf_processor, "tokenizer", self.hf_processor)

    # --------------------------------------------------------------- messages
    def build_messages(
        self,
        task: str,
        image: Image.Image,
        *,
        system_prompt: str | None = None,
        assistant_prefill: str | None = None,
    ) -> list[dict[str, Any]]:
        """The chat messages for one image + task, in the family's format."""
        fmt = self.prompt_format
        image_item: dict[str, Any] = {"type": "image"}
        if fmt.image_in_message:
            image_item["image"] = image
        text_item = {"type": "text", "text": task}
        content = [image_item, text_item] if fmt.image_before_text else [text_item, image_item]
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        messages.append({"role": "user", "content": content})
        if assistant_prefill and fmt.continue_final_message:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant_prefill}]})
        return messages

    def render(
        self,
        task: str,
        image: Image.Image,
        *,
        system_prompt: str | None = None,
        assistant_prefill: str | None = None,
        append_text: str = "",
    ) -> str:
        """The prompt string: chat template, then prefill (if not templated) and ``append_text``."""
        messages = self.build_messages(
            task, image, system_prompt=system_prompt, assistant_prefill=assistant_prefill
        )
        continues = bool(assistant_prefill) and self.prompt_format.continue_final_message
        text = self.hf_processor.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=not continues,
            continue_final_message=continues,
        )
        if assistant_prefill and not continues:
            text += assistant_prefill
        return text + append_text

    # ----------------------------------------------------------------- inputs
    def prepare_inputs(
        self,
        task: str,
        image: ImageInput,
        *,
        system_prompt: str | None = None,
        assistant_prefill: str | None = None,
        append_text: str = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        """Model inputs (``BatchFeature``) for one image + task; batch dimension 1."""
        return self.prepare_inputs_batch(
            [task],
            [image],
            system_prompt=system_prompt,
            assistant_prefill=assistant_prefill,
            append_text=append_text,
            device=device,
            dtype=dtype,
        )

    def prepare_inputs_batch(
        self,
        tasks: Sequence[str],
        images: Sequence[ImageInput],
        *,
        system_prompt: str | None = None,
        assistant_prefill: str | Sequence[str] | None = None,
        append_text: str | Sequence[str] = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        """Left-padded model inputs for N (task, image) pairs.

        Left padding keeps every row's last position at the next token, which generation and
        last-token analyses rely on. ``assistant_prefill`` / ``append_text`` may be one value for
        all items or one per item. Floating inputs (``pixel_values``) are cast to ``dtype``.
        """
        if isinstance(tasks, str) or isinstance(images, Image.Image | str | Path):
            raise InputError("prepare_inputs_batch takes a list of tasks and a list of images")
        tasks, images = list(tasks), list(images)
        if not tasks:
            raise InputError("prepare_inputs_batch needs at least one (task, image) pair")
        if len(tasks) != len(images):
            raise InputError(f"got {len(tasks)} tasks but {len(images)} images: give one image per task")
        prefills = self._per_item(assistant_prefill, len(tasks), "assistant_prefill")
        appends = self._per_item(append_text, len(tasks), "append_text")
        pil_images = [load_image(image, index=i) for i, image in enumerate(images)]
        texts = [
            self.render(
                _check_task(task, i),
                image,
                system_prompt=system_prompt,
                assistant_prefill=prefill,
                append_text=append or "",
            )
            for i, (task, image, prefill, append) in enumerate(zip(tasks, pil_images, prefills, appends))
        ]
        tokenizer = self.tokenizer
        previous_side = getattr(tokenizer, "padding_side", None)
        tokenizer.padding_side = "left"
        try:
            inputs = self._call_processor(texts, pil_images)
        except (ValueError, TypeError, RuntimeError) as error:
            sizes = ", ".join(f"{im.width}x{im.height}" for im in pil_images)
            hint = ""
            if not self.spec.batches_mixed_image_sizes and len({im.size for im in pil_images}) > 1:
                hint = (
                    f" ({self.spec.name} declares batches_mixed_image_sizes=False: batch images of one "
                    "size, or run them one at a time)"
                )
            raise InputError(
                f"{type(self.hf_processor).__name__} rejected the input (image sizes {sizes}): {error}{hint}"
            ) from error
        finally:
            tokenizer.padding_side = previous_side
        if device is not None or dtype is not None:
            inputs = {
                key: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
                if isinstance(value, torch.Tensor)
                else value
                for key, value in inputs.items()
            }
            from transformers import BatchFeature

            inputs = BatchFeature(inputs)
        return inputs

    def _call_processor(self, texts: list[str], images: list[Image.Image]) -> Any:
        """The HF processor on one image per text: a flat image list, or one list per sample.

        Most processors take the flat list; those that take several images per sample (Mllama, Gemma3,
        LFM2-VL) count a flat list of N as N images for every sample and refuse it when N > 1, so a
        refused flat batch is retried nested (the form every nesting-aware processor accepts).
        """
        kwargs = {"padding": True, "return_tensors": "pt", **self._image_kwargs()}
        try:
            return self.hf_processor(text=texts, images=images, **kwargs)
        except (ValueError, TypeError, RuntimeError):
            if len(images) < 2:
                raise
        return self.hf_processor(text=texts, images=[[image] for image in images], **kwargs)

    def _image_kwargs(self) -> dict[str, Any]:
        """Extra processor keyword arguments; a family processor subclass may override.

        A processor that still returns a deprecated image output by default (Fuyu's ``image_patches``)
        is asked for the current one (``pixel_values``), which the model and every tool here read.
        """
        parameters = inspect.signature(type(self.hf_processor).__call__).parameters
        return {"return_legacy_image_output": False} if "return_legacy_image_output" in parameters else {}

    @staticmethod
    def _per_item(value: Any, count: int, name: str) -> list[Any]:
        if value is None or isinstance(value, str):
            return [value] * count
        values = list(value)
        if len(values) != count:
            raise InputError(f"{name} has {len(values)} entries for {count} items: give one or one per item")
        return values
