"""VLM Spectra's patch-hook surface: the valid patch types, their validation and the patch helpers.

The helpers are vlmforge's (:mod:`vlmforge.core.patching`): the same objects work as VLM Spectra hook
functions ``fn(module, args, kwargs, value)`` and as native ones ``fn(activation, hook_point)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlmforge.core.hooks import ALL_HOOK_TYPES
from vlmforge.core.patching import (
    AddActivation,
    BlockAttention,
    PatchActivation,
    PatchHead,
    ScaleActivation,
    SetAttentionMask,
    ZeroAblation,
)

#: A VLM Spectra hook function: ``fn(module, args, kwargs, value) -> Tensor | None`` (flat values).
HookFn = Callable[[nn.Module, tuple, dict[str, Any], torch.Tensor], torch.Tensor | None]
#: An ``attn.hook_mask`` function: the same signature, the value being the 4-D attention mask.
MaskHookFn = HookFn

#: Types patched through a forward hook on the module's output.
VALID_PATCH_HOOK_TYPES: list[str] = [t for t, hook in ALL_HOOK_TYPES.items() if hook.direction == "output"]
#: Types patched through a forward pre-hook on the module's input (or its attention mask).
VALID_PRE_PATCH_HOOK_TYPES: list[str] = [
    t for t, hook in ALL_HOOK_TYPES.items() if hook.direction in ("input", "mask")
]
#: Computed from other values: readable from a cache, never patchable.
VIRTUAL_HOOK_TYPES: list[str] = [
    *(t for t, hook in ALL_HOOK_TYPES.items() if hook.direction == "computed"),
    "hook_resid_mid",
]


def validate_patch_hook_type(hook_type: str) -> bool:
    """Whether ``hook_type`` is patched as a pre-hook (True) or a post-hook (False).

    Raises:
        ValueError: a virtual type (the message says "virtual" and lists the valid types), or an
            unknown one ("Unknown hook type").
    """
    if hook_type in VALID_PATCH_HOOK_TYPES:
        return False
    if hook_type in VALID_PRE_PATCH_HOOK_TYPES:
        return True
    valid = ", ".join([*VALID_PATCH_HOOK_TYPES, *VALID_PRE_PATCH_HOOK_TYPES])
    if hook_type in VIRTUAL_HOOK_TYPES:
        raise ValueError(
            f"Cannot patch {hook_type!r}: it is a virtual hook (computed, not read off a module). "
            f"Valid patch hook types: {valid}"
        )
    raise ValueError(f"Unknown hook type: {hook_type!r}. Valid patch hook types: {valid}")


__all__ = [
    "VALID_PATCH_HOOK_TYPES",
    "VALID_PRE_PATCH_HOOK_TYPES",
    "AddActivation",
    "BlockAttention",
    "HookFn",
    "MaskHookFn",
    "PatchActivation",
    "PatchHead",
    "ScaleActivation",
    "SetAttentionMask",
    "ZeroAblation",
    "validate_patch_hook_type",
]
