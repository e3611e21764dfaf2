"""VLM Spectra's ``HookManager`` on vlmforge's hook runtime (one machinery: no second set of hooks).

Cache and patch functions are registered through :class:`vlmforge.core.runtime.HookedVLM`; this class
adds VLM Spectra's semantics on top: flat values and ``fn(module, args, kwargs, value)`` functions, one
active cache and one active patch set at a time (a new one replaces the current one), the cache keeps
the *last* module run, and virtual entries and ``format_cache_item`` are applied when the cache is
finalised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.errors import ContractError
from vlmforge.core.hooks import HookPoint as NativeHookPoint
from vlmforge.core.hooks import RawHook
from vlmforge.core.runtime import HookedVLM as NativeHookedVLM
from vlmforge.spectra.core.activation_cache import ActivationCache
from vlmforge.spectra.core.hook_points import HookPoint
from vlmforge.spectra.core.patch_hooks import validate_patch_hook_type


@dataclass
class _CacheSession:
    """One ``run_with_cache``: its cache (raw values while open), virtual values, live registrations."""

    cache: ActivationCache
    names: list[str]
    virtual: dict[str, torch.Tensor] = field(default_factory=dict)
    registrations: list[Any] = field(default_factory=list)


def _attention_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    value = args[0] if args else kwargs.get("hidden_states")
    return value[0] if isinstance(value, tuple) else value


class HookManager:
    """Registers cache and patch hooks for an adapter's model.

    Args:
        adapter: the family adapter.
        runtime: the vlmforge runtime whose hook machinery to use; by default one is made for the
            adapter's model.
    """

    def __init__(self, adapter: ModelAdapter, runtime: NativeHookedVLM | None = None) -> None:
        self.adapter = adapter
        self._runtime = (
            runtime if runtime is not None else NativeHookedVLM(adapter.model, None, adapter=adapter)
        )
        self._sessions: dict[int, _CacheSession] = {}
        self._active_cache: int | None = None
        self._patches: list[Any] = []

    # -------------------------------------------------------------- names
    def expand(self, names: str | Iterable[str]) -> list[str]:
        """Every concrete name of ``names`` in order (all validated before anything is registered).

        ``*`` expands to the layers that have the hook type: not every layer has every hook (a
        mixture-of-experts layer has no dense ``mlp.hook_pre``, a hybrid decoder's linear-attention
        layers no ``attn.*``), and a wildcard means "wherever it exists", as in vlmforge's runtime.

        Raises:
            ValueError: a malformed name or an unknown hook type.
            IndexError: a layer out of range.
            NotImplementedError: a named layer without the hook, or a ``*`` that no layer has (VLM
                Spectra's error for a module the adapter lacks); the message says why.
        """
        if isinstance(names, str):
            names = [names]
        expanded: list[str] = []
        for name in names:
            concrete = HookPoint.expand(name, self.adapter.lm_num_layers)
            present = [n for n in concrete if self._absence(n) is None]
            if concrete and not present:  # a named layer without the hook, or a `*` no layer has
                where = "no layer has it" if HookPoint.parse(name)[1] == "*" else "this layer has none"
                raise NotImplementedError(
                    f"the adapter has no module for {name!r} ({where}): {self._absence(concrete[0])}"
                )
            expanded += [n for n in present if n not in expanded]
        return expanded

    def _absence(self, name: str) -> str | None:
        """Why the model has no hook ``name`` (``None``: it has it): the runtime's answer, from the adapter's
        role table and, for recomputed patterns, whether the layer's keys are its own."""
        return self._runtime.hook_absence(self._native(name))

    @staticmethod
    def _native(name: str) -> NativeHookPoint:
        hook_type, layer = HookPoint.parse(name)
        return NativeHookPoint(int(layer), hook_type)

    def _add(self, bound: Sequence[tuple[NativeHookPoint, Any]], *, reader: bool) -> list[Any]:
        try:
            return self._runtime._add_hooks(bound, reader=reader)
        except ContractError as error:
            raise NotImplementedError(f"the adapter has no module for this hook: {error}") from error

    # -------------------------------------------------------------- cache
    def register_cache_hooks(self, cache: ActivationCache, hook_names: str | Iterable[str]) -> None:
        """Record ``hook_names`` into ``cache`` (finalised by :meth:`finalize_cache`).

        The active cache's hooks are removed first (a nested cache replaces the outer one).
        """
        names = self.expand(hook_names)
        self.remove_cache_hooks()
        session = _CacheSession(cache, names)
        bound = [(self._native(name), self._recorder(name, session)) for name in names]
        session.registrations = self._add(bound, reader=True)
        self._sessions[id(cache)] = session
        self._active_cache = id(cache)

    def _recorder(self, name: str, session: _CacheSession) -> Any:
        point = self._native(name)
        if point.spec.direction == "computed":

            def virtual(value: torch.Tensor, _point: NativeHookPoint) -> None:
                session.virtual[name] = value.detach().clone()

            return virtual
        is_mask = point.spec.direction == "mask"

        def record(_module: Any, args: tuple, kwargs: dict, value: torch.Tensor) -> None:
            if is_mask:  # VLM Spectra caches the attention input here, not the mask
                value = _attention_input(args, kwargs)
                if value is None:
                    return
            session.cache[name] = value.detach().clone()

        return RawHook(record)

    def finalize_cache(self, cache: ActivationCache) -> ActivationCache:
        """Complete ``cache`` and unhook it: virtual entries added, ``format_cache_item`` on the raw ones.

        While the block runs the cache holds the raw (flat) values of the direct points.
        """
        session = self._sessions.pop(id(cache), None)
        if session is None:
            return cache
        for registration in session.registrations:
            registration.remove()
        if self._active_cache == id(cache):
            self._active_cache = None
        for name in session.names:
            if name in session.virtual:
                cache[name] = session.virtual[name]
        for name in list(cache):
            hook_type, _ = HookPoint.parse(name)
            if name not in session.virtual:
                cache[name] = self.adapter.format_cache_item(hook_type, cache[name])
        return cache

    def remove_cache_hooks(self) -> None:
        """Unhook the active cache (what it recorded so far is kept for :meth:`finalize_cache`)."""
        session = self._sessions.get(self._active_cache) if self._active_cache is not None else None
        if session is not None:
            for registration in session.registrations:
                registration.remove()
        self._active_cache = None

    # ------------------------------------------------------------ patches
    def register_patch_hooks(self, hooks: Sequence[tuple[str, Callable[..., Any]]]) -> None:
        """Register ``(name, fn)`` patches, ``fn(module, args, kwargs, value)``, replacing the active ones.

        Every name is expanded and validated (virtual types raise ``ValueError``) before anything is
        registered. Patches run in list order, before any cache hook.
        """
        bound: list[tuple[NativeHookPoint, Any]] = []
        for entry in hooks:
            if not (isinstance(entry, tuple | list) and len(entry) == 2 and callable(entry[1])):
                raise ValueError(f"hooks must be (hook_name, function) pairs, got {entry!r}")
            name, function = entry
            # The type first: a virtual type is refused as such, whichever layers have it.
            validate_patch_hook_type(HookPoint.parse(name)[0])
            for concrete in self.expand(name):
                point = self._native(concrete)
                bound.append((point, self._patch_function(point, function)))
        self.remove_patch_hooks()
        self._patches = self._add(bound, reader=False)

    @staticmethod
    def _patch_function(point: NativeHookPoint, function: Callable[..., Any]) -> RawHook:
        if point.spec.direction != "mask":
            return RawHook(function)

        def mask_function(module: Any, args: tuple, kwargs: dict, mask: torch.Tensor) -> Any:
            if kwargs.get("attention_mask") is None and mask.shape[-1] > mask.shape[-2]:
                raise NotImplementedError(
                    f"{point.name}: patching the synthesized causal mask during cached decoding is not "
                    "supported (VLM Spectra semantics); use vlmforge's native run_with_hooks for that"
                )
            return function(module, args, kwargs, mask)

        return RawHook(mask_function)

    def remove_patch_hooks(self) -> None:
        for registration in self._patches:
            registration.remove()
        self._patches = []

    def remove_all_hooks(self) -> None:
        self.remove_cache_hooks()
        self.remove_patch_hooks()


__all__ = ["HookManager"]
