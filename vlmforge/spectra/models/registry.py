"""VLM Spectra's ``ModelRegistry``: exact-id lookup and ``load`` over vlmforge's registry.

Every family vlmforge registers is here: each checkpoint id in its ``SUPPORTED_MODELS`` and its tiny
model ``tiny/<family>``. Adapters registered through this class (VLM Spectra style, by their
``SUPPORTED_MODELS``) are looked up first; the last registration of an id wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.registry import TINY_PREFIX
from vlmforge.core.registry import ModelRegistry as NativeModelRegistry
from vlmforge.spectra.core.hooked_vlm import HookedVLM


class ModelRegistry:
    """Class-level registry of model ids -> adapter classes."""

    _registered: ClassVar[dict[str, type[ModelAdapter]]] = {}

    @classmethod
    def register(cls, adapter_type: str) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
        """Decorator mapping each id in the class's ``SUPPORTED_MODELS`` to it (the last one wins)."""

        def decorator(adapter_class: type[ModelAdapter]) -> type[ModelAdapter]:
            for model_id in getattr(adapter_class, "SUPPORTED_MODELS", ()):
                cls._registered[model_id] = adapter_class
            adapter_class.ADAPTER_TYPE = adapter_type  # type: ignore[attr-defined]
            return adapter_class

        return decorator

    @classmethod
    def _native(cls) -> dict[str, type[ModelAdapter]]:
        found: dict[str, type[ModelAdapter]] = {}
        for family, adapter in NativeModelRegistry.adapters().items():
            if NativeModelRegistry.is_available(adapter):
                found.update(dict.fromkeys(adapter.spec.checkpoints, adapter))
                found[TINY_PREFIX + family] = adapter
        return found

    @classmethod
    def list_supported_models(cls) -> list[str]:
        """Every supported id: each family's checkpoints (and ``tiny/<family>``), then own registrations."""
        names = list(cls._native())
        return names + [name for name in cls._registered if name not in names]

    @classmethod
    def get_adapter_class(cls, model_name: str) -> type[ModelAdapter]:
        """The adapter class of exactly ``model_name``.

        Raises:
            ValueError: ``"Model … not supported"``.
        """
        adapter = cls._registered.get(model_name) or cls._native().get(model_name)
        if adapter is None:
            raise ValueError(
                f"Model {model_name!r} not supported. "
                f"Supported models: {', '.join(cls.list_supported_models())}"
            )
        return adapter

    @classmethod
    def load(
        cls, model_name: str, device: Any = "auto", **kwargs: Any
    ) -> tuple[nn.Module, Any, ModelAdapter]:
        """``(model, hf_processor, adapter)`` of ``model_name``, loaded by ``HookedVLM.from_pretrained``."""
        cls.get_adapter_class(model_name)
        vlm = HookedVLM.from_pretrained(model_name, device=device, **kwargs)
        return vlm.model, vlm.processor, vlm.adapter


__all__ = ["ModelRegistry"]
