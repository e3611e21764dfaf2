"""The contract, registry, hook runtime and prompt processing that every family shares."""

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.cache import ActivationCache
from vlmforge.core.errors import (
    AdapterDiscoveryError,
    CheckpointLoadError,
    ContractError,
    InputError,
    InvalidHookError,
    UnknownModelError,
    UnsupportedArchitectureError,
    VLMForgeError,
)
from vlmforge.core.hooks import (
    ALL_HOOK_TYPES,
    HOOK_TYPES,
    MASK_HOOK_TYPES,
    HookPoint,
    RawHook,
    expand_hook_names,
)
from vlmforge.core.processing import VLMProcessor, load_image
from vlmforge.core.registry import ModelRegistry, Resolution
from vlmforge.core.roles import ROLES, Role
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import (
    CAPABILITY_NAMES,
    AttentionRecipe,
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    MixtureOfExperts,
    ModulePaths,
    PromptFormat,
)

__all__ = [
    "ALL_HOOK_TYPES",
    "CAPABILITY_NAMES",
    "HOOK_TYPES",
    "MASK_HOOK_TYPES",
    "ROLES",
    "ActivationCache",
    "AdapterDiscoveryError",
    "AttentionRecipe",
    "Capabilities",
    "CheckpointLoadError",
    "ContractError",
    "FamilySpec",
    "HookPoint",
    "HookedVLM",
    "ImageTokenSource",
    "InputError",
    "InvalidHookError",
    "MixtureOfExperts",
    "ModelAdapter",
    "ModelRegistry",
    "ModulePaths",
    "PromptFormat",
    "RawHook",
    "Resolution",
    "Role",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "VLMForgeError",
    "VLMProcessor",
    "expand_hook_names",
    "load_image",
]
