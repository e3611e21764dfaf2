"""VLM Spectra's hook-point grammar (``HookPoint``, ``HookConfig``, ``HOOK_CONFIGS``) on vlmforge's table.

Names are ``lm.blocks.{L}.{type}`` with ``L`` digits or ``*``; the types and where they live are
vlmforge's (:data:`vlmforge.core.hooks.ALL_HOOK_TYPES`). This module is the grammar only: ``expand``
yields every layer for ``*``; which layers of a model really have a type (a mixture-of-experts layer has
no dense ``mlp.hook_pre``) is decided by :meth:`~vlmforge.spectra.core.HookManager.expand` from the
adapter, since that needs a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vlmforge.core.cache import layer_pattern
from vlmforge.core.hooks import ALL_HOOK_TYPES

_NAME = re.compile(r"^lm\.blocks\.(\d+|\*)\.(.+)$")


@dataclass(frozen=True)
class HookConfig:
    """Where a hook type lives.

    Attributes:
        module_getter: the adapter method returning the module (``get_lm_q_proj``).
        is_pre: a forward pre-hook (reads the module's input) rather than a forward hook.
        is_virtual: computed from other values, never read off a module.
    """

    module_getter: str
    is_pre: bool
    is_virtual: bool


#: hook type -> :class:`HookConfig`, derived from vlmforge's hook table.
HOOK_CONFIGS: dict[str, HookConfig] = {
    hook_type: HookConfig(
        module_getter=hook.site.accessor,
        is_pre=hook.direction in ("input", "mask"),
        is_virtual=hook.direction == "computed",
    )
    for hook_type, hook in ALL_HOOK_TYPES.items()
}


class HookPoint:
    """Parse, expand and format hook names (class methods only)."""

    @classmethod
    def parse(cls, name: str) -> tuple[str, int | str]:
        """``"lm.blocks.3.attn.hook_q"`` -> ``("attn.hook_q", 3)``; ``*`` stays ``"*"``.

        Raises:
            ValueError: a malformed name ("Invalid hook name format") or an unregistered type
                ("Unknown hook type").
        """
        match = _NAME.match(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(
                f"Invalid hook name format: {name!r}; expected 'lm.blocks.{{layer}}.{{hook_type}}' with "
                "layer digits or '*'"
            )
        layer, hook_type = match.groups()
        if hook_type not in HOOK_CONFIGS:
            raise ValueError(f"Unknown hook type: {hook_type!r}; valid types: {', '.join(HOOK_CONFIGS)}")
        return hook_type, (layer if layer == "*" else int(layer))

    @classmethod
    def expand(cls, name: str, n_layers: int) -> list[str]:
        """The concrete names of ``name`` (``*`` -> layers 0 .. n_layers-1 ascending).

        Raises:
            IndexError: a layer out of range.
        """
        hook_type, layer = cls.parse(name)
        if layer == "*":
            return [cls.format(hook_type, index) for index in range(n_layers)]
        if not 0 <= int(layer) < n_layers:
            raise IndexError(f"layer {layer} out of range for a model with {n_layers} layers ({name!r})")
        return [cls.format(hook_type, int(layer))]

    @classmethod
    def format(cls, hook_type: str, layer: int) -> str:
        return f"lm.blocks.{layer}.{hook_type}"

    @classmethod
    def get_config(cls, hook_type: str) -> HookConfig:
        try:
            return HOOK_CONFIGS[hook_type]
        except KeyError:
            raise ValueError(
                f"Unknown hook type: {hook_type!r}; valid types: {', '.join(HOOK_CONFIGS)}"
            ) from None

    @classmethod
    def is_virtual(cls, hook_type: str) -> bool:
        return cls.get_config(hook_type).is_virtual

    @classmethod
    def is_pre_hook(cls, hook_type: str) -> bool:
        return cls.get_config(hook_type).is_pre

    @classmethod
    def get_module_getter(cls, hook_type: str) -> str:
        return cls.get_config(hook_type).module_getter

    @classmethod
    def matches_pattern(cls, name: str, pattern: str) -> bool:
        """Whether ``name`` matches ``pattern`` (``*`` matches a layer number)."""
        return layer_pattern(pattern).match(name) is not None


__all__ = ["HOOK_CONFIGS", "HookConfig", "HookPoint"]
