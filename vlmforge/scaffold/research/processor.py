"""The processor: which one research reads (real or tiny), its classes, and fixed vs dynamic image sizes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import transformers
from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport, ResolvedSource, Status
from vlmforge.scaffold.research.isolation import offline, quiet
from vlmforge.tiny import tokenizer_recipe

__all__ = ["has_stored_template", "load_processor", "research_processor"]

# Image-processor attributes that make the number of image tokens depend on the image (transformers names).
_DYNAMIC_RESIZE_ATTRIBUTES = (
    "min_pixels",
    "max_pixels",
    "do_image_splitting",
    "image_grid_pinpoints",
    "do_pan_and_scan",
    "crop_to_patches",
    "max_image_tiles",
    "max_patches",
)
_PROCESSOR_QUESTION = "Processor / image processor class"
_RESIZING_QUESTION = "Image preprocessing: fixed or dynamic"


@dataclass(frozen=True)
class _Resizing:
    """How the image processor sizes images, read off its class defaults.

    Attributes:
        image_processor: its class name.
        basis: what decides it: ``knobs`` (a dynamic-resolution attribute is set), ``longest_edge``
            (aspect-preserving resize, no crop), ``crop`` (a center crop), ``size`` (a fixed height x width);
            None when nothing does.
        knobs / size / crop: the attribute values behind it.
    """

    image_processor: str
    basis: Literal["knobs", "longest_edge", "crop", "size"] | None
    knobs: dict[str, Any]
    size: Any
    crop: Any

    @property
    def value(self) -> str:
        if self.basis is None:
            return "unknown"
        return "dynamic" if self.basis in ("knobs", "longest_edge") else "fixed"


def load_processor(
    resolved: ResolvedSource, trust_remote_code: bool, tiny_processor: Any, tiny_error: str | None
) -> tuple[Any, str]:
    """The real processor from the checkpoint files if present, else the tiny one; and where it came from."""
    if resolved.files_dir is not None:
        has_files = any(
            (resolved.files_dir / name).is_file()
            for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
        )
        if has_files:
            with offline(), quiet():
                try:
                    processor = transformers.AutoProcessor.from_pretrained(
                        resolved.files_dir, local_files_only=True, trust_remote_code=trust_remote_code
                    )
                    return processor, f"real processor from {resolved.files_dir}"
                except Exception as error:  # fall back to the tiny processor, but say so
                    return tiny_processor, f"tiny processor (loading the real one failed: {error})"
    if tiny_processor is None:
        return None, f"no processor (no processor files with the source; {tiny_error})"
    return tiny_processor, "tiny processor of vlmforge.tiny"


def has_stored_template(config: PretrainedConfig) -> bool:
    """Whether the tiny processor's chat template is a stored copy of the family's real one."""
    with contextlib.suppress(Exception):
        return bool(tokenizer_recipe(config).stored)
    return False


def research_processor(
    config: PretrainedConfig, processor: Any, provenance: str, report: ResearchReport
) -> None:
    """The processor / image processor classes and whether images are resized to a fixed size."""
    if processor is None:
        report.add(Answer("processor_class", _PROCESSOR_QUESTION, None, "unknown: no processor", "unknown"))
        report.add(Answer("image_resizing", _RESIZING_QUESTION, None, "unknown: no processor", "unknown"))
        return
    image_processor = getattr(processor, "image_processor", None)
    report.add(
        Answer(
            "processor_class",
            _PROCESSOR_QUESTION,
            f"{type(processor).__name__} / {type(image_processor).__name__ if image_processor else '-'}",
            f"{provenance}; transformers' processor mapping for {config.model_type!r}",
        )
    )
    if image_processor is None:
        report.add(
            Answer(
                "image_resizing",
                _RESIZING_QUESTION,
                None,
                "unknown: the processor has no image processor",
                "unknown",
            )
        )
        return
    report.add(_resizing_answer(_resizing(image_processor)))


def _resizing(image_processor: Any) -> _Resizing:
    """Read the *class* defaults: the tiny processor shrinks sizes, but which knobs exist is what matters."""
    image_cls = type(image_processor)

    def default(name: str) -> Any:
        return getattr(image_cls, name, getattr(image_processor, name, None))

    knobs = {name: default(name) for name in _DYNAMIC_RESIZE_ATTRIBUTES if default(name) not in (None, False)}
    size = getattr(image_cls, "size", None) or getattr(image_processor, "size", None)
    crop = getattr(image_cls, "crop_size", None) if getattr(image_cls, "do_center_crop", False) else None
    basis: Literal["knobs", "longest_edge", "crop", "size"] | None = None
    if knobs:
        basis = "knobs"
    elif isinstance(size, dict) and "longest_edge" in size and crop is None:
        basis = "longest_edge"
    elif isinstance(crop, dict) and {"height", "width"} <= crop.keys():
        basis = "crop"
    elif isinstance(size, dict) and {"height", "width"} <= size.keys():
        basis = "size"
    return _Resizing(image_cls.__name__, basis, knobs, size, crop)


def _resizing_answer(resizing: _Resizing) -> Answer:
    cls, size = resizing.image_processor, resizing.size
    evidence = {
        "knobs": f"{cls} has " + ", ".join(f"{k}={v}" for k, v in resizing.knobs.items()),
        "longest_edge": f"{cls} resizes keeping the aspect ratio within size={size} and does not crop",
        "crop": f"{cls} resizes (size={size}) then center-crops to {resizing.crop}",
        "size": f"{cls}.size = {size}",
        None: f"unknown: {cls}.size = {size} and no dynamic-resolution knob",
    }[resizing.basis]
    status: Status = "found" if resizing.basis is not None else "unknown"
    return Answer("image_resizing", _RESIZING_QUESTION, resizing.value, evidence, status)
