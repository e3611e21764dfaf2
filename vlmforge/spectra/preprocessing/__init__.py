"""VLM Spectra's ``preprocessing`` module: processors, image geometry and vision utilities.

Thin re-exports of :mod:`vlmforge.analysis` (geometry works for every single-grid family, derived from
its processor) and of vlmforge's prompt processor under VLM Spectra's wrapper names.
"""

from vlmforge.analysis.geometry import CorrectedBbox, CorrectedSeg, ImageInfo, PatchOverlap
from vlmforge.analysis.vision import process_vision_info, resolve_patch_params, smart_resize
from vlmforge.spectra.preprocessing.processors import BaseProcessor, QwenProcessor, SmolVLMProcessor

__all__ = [
    "BaseProcessor",
    "CorrectedBbox",
    "CorrectedSeg",
    "ImageInfo",
    "PatchOverlap",
    "QwenProcessor",
    "SmolVLMProcessor",
    "process_vision_info",
    "resolve_patch_params",
    "smart_resize",
]
