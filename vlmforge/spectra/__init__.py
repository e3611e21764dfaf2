"""VLM Spectra compatibility: ``from vlmforge.spectra import HookedVLM`` instead of ``from vlm_spectra ...``.

A thin layer over vlmforge's runtime (one hook machinery) that keeps VLM Spectra's signatures and
defaults, for every family vlmforge registers. New code should prefer the native API
(``from vlmforge import HookedVLM``); the README's "Coming from VLM Spectra" lists the differences.
"""

# (Importing this package imports ``vlmforge`` first, which registers the tiny-model builder.)
from vlmforge.spectra.core import (
    VALID_PATCH_HOOK_TYPES,
    ActivationCache,
    AddActivation,
    BlockAttention,
    HookedVLM,
    HookFn,
    PatchActivation,
    PatchHead,
    ScaleActivation,
    SetAttentionMask,
    ZeroAblation,
    validate_patch_hook_type,
)
from vlmforge.spectra.models import ModelRegistry
from vlmforge.spectra.models.base_adapter import ModelAdapter
from vlmforge.spectra.preprocessing import process_vision_info

__all__ = [
    "VALID_PATCH_HOOK_TYPES",
    "ActivationCache",
    "AddActivation",
    "BlockAttention",
    "HookFn",
    "HookedVLM",
    "ModelAdapter",
    "ModelRegistry",
    "PatchActivation",
    "PatchHead",
    "ScaleActivation",
    "SetAttentionMask",
    "ZeroAblation",
    "process_vision_info",
    "validate_patch_hook_type",
]
