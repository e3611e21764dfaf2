"""VLM Spectra's ``core``: the runtime, cache, hook manager, hook points and patch hooks."""

from vlmforge.spectra.core.activation_cache import ActivationCache
from vlmforge.spectra.core.hook_manager import HookManager
from vlmforge.spectra.core.hook_points import HookConfig, HookPoint
from vlmforge.spectra.core.hooked_vlm import HookedVLM
from vlmforge.spectra.core.patch_hooks import (
    VALID_PATCH_HOOK_TYPES,
    VALID_PRE_PATCH_HOOK_TYPES,
    AddActivation,
    BlockAttention,
    HookFn,
    MaskHookFn,
    PatchActivation,
    PatchHead,
    ScaleActivation,
    SetAttentionMask,
    ZeroAblation,
    validate_patch_hook_type,
)

__all__ = [
    "VALID_PATCH_HOOK_TYPES",
    "VALID_PRE_PATCH_HOOK_TYPES",
    "ActivationCache",
    "AddActivation",
    "BlockAttention",
    "HookConfig",
    "HookFn",
    "HookManager",
    "HookPoint",
    "HookedVLM",
    "MaskHookFn",
    "PatchActivation",
    "PatchHead",
    "ScaleActivation",
    "SetAttentionMask",
    "ZeroAblation",
    "validate_patch_hook_type",
]
