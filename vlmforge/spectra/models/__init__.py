"""VLM Spectra's ``models`` package: the adapter base class, the registry and legacy modules."""

from vlmforge.spectra.models import ModelAdapter
from vlmforge.spectra.models.base_adapter import ModelAdapter as BaseModelAdapter
from vlmforge.spectra.models.registry import ModelRegistry

__all__ = ["BaseModelAdapter", "ModelAdapter", "ModelRegistry"]
