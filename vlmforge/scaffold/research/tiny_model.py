"""The tiny random model of the same architecture: what to rebuild it from, and building it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmforge.scaffold.report import ResolvedSource
from vlmforge.scaffold.research.isolation import quiet
from vlmforge.tiny import build_tiny_model, build_tiny_processor, reference_checkpoints, resolve_reference
from vlmforge.tiny.processor import PROBE_MESSAGES, probe_image

__all__ = ["TinyBuild", "build_tiny", "image_forward_failure", "tiny_reference"]


@dataclass(frozen=True)
class TinyBuild:
    """What building the tiny model gave.

    Attributes:
        model: the tiny model bundle (``.model``, ``.processor``), None when not built.
        processor: its processor, or a tiny processor built alone (None when neither could be).
        error: why something could not be built.
    """

    model: Any
    processor: Any
    error: str | None


def tiny_reference(resolved: ResolvedSource) -> tuple[str, str]:
    """What ``build_tiny_model`` should be given to rebuild this architecture, and why."""
    if resolved.kind == "reference" or (
        resolved.checkpoint and resolved.checkpoint in reference_checkpoints()
    ):
        return resolved.checkpoint or resolved.given, "stored reference config"
    if resolved.kind == "model_type":
        return resolved.given, "bare model_type: build_tiny_model uses transformers' default config"
    # A local dir / cached hub id: use it if the tiny builder accepts it, else fall back to the model_type.
    candidate = str(resolved.files_dir) if resolved.kind == "local_dir" else resolved.given
    with quiet():
        try:
            resolve_reference(candidate)
            return candidate, "build_tiny_model accepts this location"
        except Exception as error:
            return resolved.config.model_type, (
                f"build_tiny_model cannot load {candidate!r} ({type(error).__name__}); the tiny model is "
                f"rebuilt from transformers' default {resolved.config.model_type!r} config instead"
            )


def build_tiny(resolved: ResolvedSource, reference: str, *, with_model: bool) -> TinyBuild:
    """The tiny model (if ``with_model``) and its processor; a processor alone when there is no model.

    A bare model_type is rebuilt from its ``reference``; anything else from the resolved config.
    """
    source: Any = resolved.config if resolved.kind != "model_type" else reference
    model, error = None, None
    if with_model:
        with quiet():
            try:
                model = build_tiny_model(source, seed=0)
            except Exception as failure:  # the tiny builder cannot do this architecture: say so
                error = f"build_tiny_model failed: {type(failure).__name__}: {failure}"
    processor = model.processor if model is not None else None
    if processor is None and error is None:
        with quiet():
            try:
                processor = build_tiny_processor(source)
            except Exception as failure:
                error = f"build_tiny_processor failed: {type(failure).__name__}: {failure}"
    return TinyBuild(model, processor, error)


def image_forward_failure(tiny: Any) -> str | None:
    """Why the tiny model (a ``TinyVLM``) cannot run a one-image chat prompt (``"Type: message"``), or None.

    Floating inputs are cast to the model's dtype first, as the runtime does (Llama 4's image processor
    returns bfloat16 pixel values for a float32 model).
    """
    model, processor = tiny.model, tiny.processor
    dtype = next(model.parameters()).dtype
    with quiet():
        try:
            prompt = processor.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True)
            inputs = processor(text=[prompt], images=[probe_image(model.config)], return_tensors="pt")
            inputs = {
                key: value.to(dtype)
                if isinstance(value, torch.Tensor) and value.is_floating_point()
                else value
                for key, value in inputs.items()
            }
            with torch.no_grad():
                model(**inputs)
        except Exception as failure:  # any failure of the forward is what is measured
            return f"{type(failure).__name__}: {failure}"
    return None
