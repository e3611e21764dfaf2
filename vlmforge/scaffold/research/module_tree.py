"""Finding things in a module tree by name, class and Linear shape: the vocabulary of structure research."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "FINAL_NORM_NAMES",
    "FUSED_QKV",
    "OWN_STATES",
    "PROJECTION_NAMES",
    "Decoder",
    "attention_child",
    "block_lists",
    "call_quietly",
    "describe",
    "find_projection",
    "is_linear",
    "is_norm",
    "linear_shapes",
    "mlp_child",
    "module_paths",
    "second_sequence",
]

_ATTENTION_NAMES = ("self_attn", "self_attention", "attention", "attn")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "mlp_block")
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_norm", "ln_f", "norm_f")
# Role -> accepted attribute names of the attention projections (transformers' naming conventions).
PROJECTION_NAMES = {
    "q_proj": ("q_proj", "query", "q", "wq", "q_lin"),
    "k_proj": ("k_proj", "key", "k", "wk", "k_lin"),
    "v_proj": ("v_proj", "value", "v", "wv", "v_lin"),
    "o_proj": ("o_proj", "out_proj", "o", "wo", "dense", "out_lin", "c_proj"),
}
FUSED_QKV = re.compile(r"^(qkv|qkv_proj|query_key_value|c_attn|wqkv|in_proj)$", re.IGNORECASE)


@dataclass(frozen=True)
class Decoder:
    """A module owning a list of blocks: the text decoder once structure research has picked it.

    Attributes:
        path: dotted path from the model root (``model.language_model``; empty for the root).
        module: the owner.
        layers_attr: the owner's attribute holding the blocks (``layers``).
        layers: the blocks.
    """

    path: str
    module: nn.Module
    layers_attr: str
    layers: nn.ModuleList


def module_paths(root: nn.Module) -> dict[int, str]:
    """``id(module) -> dotted path`` for every module under ``root``: locate a module by identity."""
    return {id(module): name for name, module in root.named_modules()}


def describe(module: nn.Module | None) -> str:
    """The class name evidence text shows for a module."""
    return type(module).__name__


def is_norm(module: nn.Module) -> bool:
    """A norm by class name (LayerNorm, RMSNorm, every family's own ``*Norm``)."""
    return "norm" in type(module).__name__.lower()


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or anything shaped like one (quantized / parallel linears)."""
    return isinstance(module, nn.Linear) or (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
    )


def linear_shapes(linears: Mapping[str, nn.Module]) -> str:
    """``"q_proj 64->64, k_proj 64->16"``: the Linear children evidence lists."""
    return ", ".join(f"{n} {c.in_features}->{c.out_features}" for n, c in linears.items())


def call_quietly(module: nn.Module, method: str) -> Any:
    """``module.<method>()`` if it exists and succeeds, else None (transformers' optional accessors)."""
    function = getattr(module, method, None)
    if callable(function):
        with contextlib.suppress(Exception):
            return function()
    return None


def _named_child(
    layer: nn.Module, conventional: Sequence[str], looks_right: Callable[[str, nn.Module], bool]
) -> str | None:
    """A block's child by conventional name, else the single child ``looks_right`` accepts."""
    children = dict(layer.named_children())
    for name in conventional:
        if name in children:
            return name
    matches = [name for name, child in children.items() if looks_right(name, child)]
    return matches[0] if len(matches) == 1 else None


def attention_child(layer: nn.Module) -> str | None:
    """The token-mixing child of a block: conventional names, else an ``*attn*`` / ``*Attention*`` child."""
    return _named_child(
        layer,
        _ATTENTION_NAMES,
        lambda n, c: (
            not is_norm(c)
            and ("attention" in type(c).__name__.lower() or "attn" in n.lower() or "attention" in n.lower())
        ),
    )


def mlp_child(layer: nn.Module) -> str | None:
    """The channel-mixing child of a block: conventional names, else a ``*MLP*`` / ``*MoE*`` child."""
    tags = ("mlp", "feedforward", "moe", "experts")
    return _named_child(layer, _MLP_NAMES, lambda n, c: any(tag in type(c).__name__.lower() for tag in tags))


def find_projection(children: Mapping[str, nn.Module], role: str) -> str | None:
    """The attention child playing ``role`` (``q_proj``...) under one of its conventional names."""
    for name in PROJECTION_NAMES[role]:
        if name in children and is_linear(children[name]):
            return name
    return None


def block_lists(root: nn.Module, prefix: str = "") -> list[Decoder]:
    """Every module under ``root`` owning a non-empty ModuleList of blocks (modules with children)."""
    found = []
    for path, module in root.named_modules():
        for child_name, child in module.named_children():
            if (
                isinstance(child, nn.ModuleList)
                and len(child)
                and all(any(True for _ in b.children()) for b in child)
            ):
                full = ".".join(p for p in (prefix, path) if p)
                found.append(Decoder(full, module, child_name, child))
    return found


# Forward parameters that are the token stream itself (every attention takes them), not a second sequence.
OWN_STATES = frozenset({"hidden_states"})


def second_sequence(module: nn.Module) -> str | None:
    """The forward parameter through which ``module`` takes a second sequence's states (its keys and
    values: ``cross_attention_states``, ``key_value_states``, ``image_hidden_states``...), or None.

    Self-attention, linear attention and convolutions take the token stream only (``hidden_states``, plus
    masks, positions and caches); a cross-attention module (or a block wrapping one) also takes the states
    it attends to.
    """
    try:
        parameters = inspect.signature(type(module).forward).parameters
    except (TypeError, ValueError):
        return None
    return next((n for n in parameters if n.endswith("_states") and n not in OWN_STATES), None)
