"""VLM Spectra's ``ActivationCache``: vlmforge's cache with ``keys()`` / ``values()`` as lists."""

from __future__ import annotations

from typing import Any

from vlmforge.core.cache import ActivationCache as _NativeActivationCache


class ActivationCache(_NativeActivationCache):
    """Hook name -> tensor (a ``dict``); ``keys()`` and ``values()`` return lists, ``stack`` as native."""

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(super().values())


__all__ = ["ActivationCache"]
