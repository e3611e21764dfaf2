"""The MLP's gate / up / down projections, told apart by shape (and by ``forward`` for unusual names)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.forward_analysis import gated_mlp_roles
from vlmforge.scaffold.research.module_tree import describe, is_linear, linear_shapes

__all__ = ["research_mlp"]

_ROLES = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class _MLPRoles:
    """Which Linear child of the MLP plays which role.

    Attributes:
        names: role -> attribute name (None: not told apart, or absent).
        linears: every Linear child by name.
        fused: the gate child also computes the up projection (one Linear, split by hand).
        reason: how ``forward`` told gate from up, when names alone could not (else empty).
    """

    names: dict[str, str | None]
    linears: dict[str, nn.Module]
    fused: bool
    reason: str


def research_mlp(mlp: nn.Module, hidden: int | None, report: ResearchReport) -> None:
    """gate_proj / up_proj / down_proj of the MLP module ``mlp`` (``hidden``: the residual width)."""
    cls = describe(mlp)
    children = dict(mlp.named_children())
    if "experts" in children or not any(map(is_linear, children.values())):
        for role in _ROLES:
            report.add(
                Answer(
                    role,
                    _question(role),
                    None,
                    f"{cls} is a mixture of experts or has no linear children ({sorted(children)}): "
                    "per-expert projections do not fit ModulePaths",
                    "hand_edit",
                )
            )
        return
    roles = _mlp_roles(mlp, hidden)
    for role in _ROLES:
        report.add(_role_answer(role, cls, roles))


def _question(role: str) -> str:
    return f"MLP {role.replace('_proj', '')} projection"


def _mlp_roles(mlp: nn.Module, hidden: int | None) -> _MLPRoles:
    """Down maps back to ``hidden``; gate and up read it, the gate named so or found in ``forward``."""
    linears = {n: c for n, c in mlp.named_children() if is_linear(c)}
    downs = [n for n, c in linears.items() if c.out_features == hidden]
    ins = [n for n, c in linears.items() if c.in_features == hidden]
    gate = next((n for n in ins if "gate" in n), None)
    ups = [n for n in ins if n != gate]
    up = ups[0] if len(ups) == 1 else None
    reason = ""
    if gate is None and len(ins) == 2:
        # Unconventional names (w1 / w3): the forward source says which one goes through the activation.
        gate, up, reason = gated_mlp_roles(type(mlp), ins)
    fused = gate is not None and up is None and linears[gate].out_features > 0 and len(ins) == 1
    down = downs[0] if len(downs) == 1 else None
    return _MLPRoles({"gate_proj": gate, "up_proj": up, "down_proj": down}, linears, fused, reason)


def _role_answer(role: str, cls: str, roles: _MLPRoles) -> Answer:
    name = roles.names[role]
    shapes = linear_shapes(roles.linears) or "none"
    if roles.fused and role in ("gate_proj", "up_proj"):
        gate = roles.names["gate_proj"]
        return Answer(
            role,
            _question(role),
            gate if role == "gate_proj" else None,
            f"{cls}.{gate} fuses gate and up ({shapes}): split it by hand",
            "hand_edit",
        )
    if name is not None:
        module = roles.linears[name]
        evidence = f"{cls}.{name}: Linear {module.in_features} -> {module.out_features}"
        if roles.reason and role != "down_proj":
            evidence += f"; {roles.reason}"
        return Answer(role, _question(role), name, evidence)
    if role == "gate_proj" and roles.names["up_proj"] is not None:
        return Answer(role, _question(role), None, f"{cls} is not gated: linear children {shapes}")
    why = f"; {roles.reason}" if roles.reason else ""
    return Answer(
        role, _question(role), None, f"unknown: cannot tell {role} from {cls}'s {shapes}{why}", "unknown"
    )
