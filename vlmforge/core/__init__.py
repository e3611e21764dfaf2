"""The contract, registry, hook runtime and prompt processing that every family shares."""

from vlmforge.core.adapter import ModelAdapter
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
from vlmforge.core.hooks import HOOK_TYPES, HookPoint, expand_hook_names
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
    ModulePaths,
    PromptFormat,
)

__all__ = [
    "CAPABILITY_NAMES",
    "HOOK_TYPES",
    "ROLES",
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
    "ModelAdapter",
    "ModelRegistry",
    "ModulePaths",
    "PromptFormat",
    "Resolution",
    "Role",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "VLMForgeError",
    "VLMProcessor",
    "expand_hook_names",
    "load_image",
]
