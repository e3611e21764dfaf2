"""VLM Spectra's processor wrapper names over vlmforge's one prompt processor.

VLM Spectra has one wrapper class per family; vlmforge has one :class:`~vlmforge.core.VLMProcessor`
driven by the family's :class:`~vlmforge.core.PromptFormat`. These names keep VLM Spectra's
constructors (``QwenProcessor(hf_processor)``) working: the family spec is found from the Hugging Face
processor's class when it is not given.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vlmforge.core import FamilySpec, ModelRegistry, VLMProcessor


def _stem(class_name: str) -> str:
    for suffix in ("ForConditionalGeneration", "Processor"):
        class_name = class_name.removesuffix(suffix)
    return class_name.lower()


def spec_for_processor(hf_processor: Any, family: str | None = None) -> FamilySpec:
    """The spec of the registered family whose model class matches the processor, else of ``family``.

    ``Qwen2_5_VLProcessor`` pairs with ``Qwen2_5_VLForConditionalGeneration``, ``Idefics3Processor`` with
    ``Idefics3ForConditionalGeneration``, and so on (transformers' naming, not a table).

    Raises:
        ValueError: no registered family matches; pass ``spec=`` explicitly.
    """
    adapters = ModelRegistry.adapters()
    stem = _stem(type(hf_processor).__name__)
    for adapter in adapters.values():
        if _stem(adapter.spec.model_class) == stem:
            return adapter.spec
    if family is not None and family in adapters:
        return adapters[family].spec
    raise ValueError(
        f"no registered family uses {type(hf_processor).__name__}; pass spec=<the family's FamilySpec> "
        f"(families: {', '.join(sorted(adapters))})"
    )


class BaseProcessor(VLMProcessor):
    """vlmforge's prompt processor under VLM Spectra's base-wrapper name.

    Args:
        hf_processor: the family's Hugging Face processor.
        spec: the family spec; found from the processor's class when omitted.
    """

    #: The family a subclass stands for (used only when the processor's class matches none).
    family: ClassVar[str | None] = None

    def __init__(self, hf_processor: Any, spec: FamilySpec | None = None) -> None:
        super().__init__(hf_processor, spec or spec_for_processor(hf_processor, self.family))


class QwenProcessor(BaseProcessor):
    """The Qwen-VL wrapper name (Qwen2.5-VL and Qwen3-VL processors)."""

    family = "qwen2_5_vl"


class SmolVLMProcessor(BaseProcessor):
    """The SmolVLM (Idefics3) wrapper name."""

    family = "smolvlm"
