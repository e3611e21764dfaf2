"""Reading config values that transformers 5 may refuse to give globally (heterogeneous configs)."""

from __future__ import annotations

from typing import Any

__all__ = ["PER_LAYER", "as_int", "config_value"]


class _PerLayer:
    """Marker for a config value that differs per layer (transformers' heterogeneous configs)."""

    def __repr__(self) -> str:
        return "<per-layer>"


PER_LAYER = _PerLayer()


def config_value(config: Any, name: str, default: Any = None) -> Any:
    """``getattr(config, name, default)`` that survives heterogeneous configs.

    transformers 5 raises on reading a global attribute (``head_dim``) that differs per layer; that is
    an answer in itself (the adapter reads one global value), so it is returned as :data:`PER_LAYER`.
    """
    try:
        return getattr(config, name, default)
    except AttributeError:
        return default
    except Exception:  # AmbiguousGlobalPerLayerAttributeError and friends
        return PER_LAYER


def as_int(value: Any) -> int | None:
    """``value`` if it is a plain int (not a bool, not :data:`PER_LAYER`), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
