"""The attention's q / k / v / o projections: their names, and whether the generic head split fits them."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn

from vlmforge.core.spec import ModulePaths
from vlmforge.scaffold.report import Answer, Status
from vlmforge.scaffold.research.geometry import HeadGeometry
from vlmforge.scaffold.research.module_tree import (
    FUSED_QKV,
    PROJECTION_NAMES,
    find_projection,
    is_linear,
    linear_shapes,
)

__all__ = ["ROLES", "Projections", "find_projections", "fused_qkv", "projection_answer", "qkv_answer"]

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Projections:
    """The attention's Linear children and which plays which role.

    Attributes:
        names: role -> attribute name (None: not found).
        linears: every Linear child by name.
        fused: names of fused q/k/v projections (``qkv_proj``, ``c_attn``...).
    """

    names: dict[str, str | None]
    linears: dict[str, nn.Module]
    fused: tuple[str, ...]


def find_projections(attn: nn.Module, geometry: HeadGeometry) -> Projections:
    """Projections by conventional name; an unusually named output projection by its shape."""
    children = dict(attn.named_children())
    linears = {n: c for n, c in children.items() if is_linear(c)}
    names = {role: find_projection(children, role) for role in PROJECTION_NAMES}
    heads, head_dim = geometry.heads, geometry.head_dim
    if names["o_proj"] is None and heads and head_dim:
        # The output projection maps heads*head_dim back to hidden.
        by_shape = [
            n
            for n, c in linears.items()
            if c.in_features == heads * head_dim
            and c.out_features == geometry.hidden
            and n not in names.values()
        ]
        names["o_proj"] = by_shape[0] if len(by_shape) == 1 else None
    return Projections(names, linears, tuple(n for n in linears if FUSED_QKV.match(n)))


def projection_answer(role: str, attn: nn.Module, projections: Projections, geometry: HeadGeometry) -> Answer:
    """The answer for one projection role, with its shape as evidence."""
    cls = type(attn).__name__
    name = projections.names[role]
    status: Status = "found"
    if name is not None:
        module = projections.linears[name]
        evidence = f"{cls}.{name}: Linear {module.in_features} -> {module.out_features}"
        problem = _head_split_problem(role, module.out_features, geometry)
        if problem and role == "q_proj" and query_gate(attn, geometry):
            evidence += f"; per head [query; gate] (2 x {geometry.head_dim}): {_QUERY_GATE_EVIDENCE}"
        elif problem:
            status, evidence = "hand_edit", f"{evidence}; {problem}"
    elif role != "o_proj" and fused_qkv(projections, geometry) is not None:
        # Not a guess: the fused projection is exactly q + k + v wide; which layout is measured later.
        fused = fused_qkv(projections, geometry)
        return Answer(
            role,
            f"Attention {role.replace('_proj', '')} projection",
            None,
            f"{cls} has no separate {role}: it is a part of the fused {fused} (spec modules.qkv_proj)",
        )
    elif projections.fused:
        status = "hand_edit"
        evidence = (
            f"{cls} has no separate {role} but a fused {projections.fused[0]} "
            f"({linear_shapes(projections.linears)}) that is not q + k + v wide: q/k/v hooks and score "
            "recomputation need a split by hand"
        )
    else:
        status = "unknown"
        shapes = linear_shapes(projections.linears)
        evidence = f"unknown: no {role} among the attention's linear children ({shapes or 'none'})"
    default_name = getattr(ModulePaths, role)
    return Answer(
        role,
        f"Attention {role.replace('_proj', '')} projection",
        name or (default_name if status != "unknown" else None),
        evidence,
        status,
    )


def fused_qkv(projections: Projections, geometry: HeadGeometry) -> str | None:
    """The fused q/k/v projection replacing separate ones: the one fused-named Linear child, exactly
    ``(heads + 2 kv_heads) head_dim`` wide, when the attention has no separate q / k / v; else None."""
    heads, kv_heads, head_dim = geometry.heads, geometry.kv_heads, geometry.head_dim
    if any(projections.names[role] for role in ("q_proj", "k_proj", "v_proj")) or len(projections.fused) != 1:
        return None
    name = projections.fused[0]
    width = (heads + 2 * kv_heads) * head_dim if heads and kv_heads and head_dim else None
    return name if projections.linears[name].out_features == width else None


def qkv_answer(attn: nn.Module, projections: Projections, geometry: HeadGeometry) -> Answer:
    """The fused q/k/v projection, with its width as evidence (None: separate projections)."""
    cls = type(attn).__name__
    name = fused_qkv(projections, geometry)
    if name is None:
        shapes = linear_shapes(projections.linears)
        return Answer("qkv_proj", _QKV_QUESTION, None, f"{cls} has no fused q/k/v projection ({shapes})")
    module = projections.linears[name]
    evidence = (
        f"{cls}.{name}: Linear {module.in_features} -> {module.out_features} = (heads {geometry.heads} + 2 x "
        f"kv heads {geometry.kv_heads}) x head_dim {geometry.head_dim}, and no separate q/k/v projection"
    )
    return Answer("qkv_proj", _QKV_QUESTION, name, evidence)


_QKV_QUESTION = "Attention fused q/k/v projection"

_QUERY_GATE_EVIDENCE = (
    "forward chunks q_proj's per-head output in two and multiplies the attention output by sigmoid(gate) "
    "(spec attention.query_gate: hooks and scores use the query half)"
)


def query_gate(attn: nn.Module, geometry: HeadGeometry) -> bool:
    """Whether ``q_proj`` returns ``[query; gate]`` per head: 2 x heads x head_dim wide, its output chunked
    in two in ``forward`` and the attention output gated by a sigmoid (Qwen3-Next / Qwen3.5 style)."""
    q_proj = getattr(attn, "q_proj", None)
    heads, head_dim = geometry.heads, geometry.head_dim
    if not (is_linear(q_proj) and heads and head_dim) or q_proj.out_features != 2 * heads * head_dim:
        return False
    try:
        source = inspect.getsource(type(attn).forward)
    except (OSError, TypeError):
        return False
    return "chunk(" in source and "self.q_proj(" in source and "sigmoid(gate)" in source.replace(" ", "")


def _head_split_problem(role: str, out_features: int, geometry: HeadGeometry) -> str | None:
    """Why ``view(B, L, heads, head_dim)`` does not fit the projection's output, if it does not."""
    expected = {"q_proj": geometry.heads, "k_proj": geometry.kv_heads, "v_proj": geometry.kv_heads}.get(role)
    head_dim = geometry.head_dim
    if not (expected and head_dim) or out_features == expected * head_dim:
        return None
    if role == "q_proj" and out_features == 2 * expected * head_dim:
        return (
            f"out dim {out_features} = 2 x heads x head_dim: the query projection is gated "
            "(half of it gates the output), the generic view(B, L, heads, head_dim) is wrong"
        )
    return f"out dim != {expected} heads x {head_dim} head_dim: the generic head split is wrong"
