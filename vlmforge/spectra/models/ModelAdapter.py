"""Legacy VLM Spectra module ``models.ModelAdapter``: ``get_model_adapter(model)``."""

from __future__ import annotations

from torch import nn

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.errors import UnsupportedArchitectureError
from vlmforge.core.registry import ModelRegistry


def get_model_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, chosen by its config (any registered family, not only Qwen-VL).

    Raises:
        ValueError: no registered family supports the model.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config: not a supported model")
    try:
        adapter_class = ModelRegistry.family_for_config(config.to_dict(), type(model).__name__)
    except UnsupportedArchitectureError as error:
        raise ValueError(str(error)) from error
    return adapter_class(model)


__all__ = ["get_model_adapter"]
