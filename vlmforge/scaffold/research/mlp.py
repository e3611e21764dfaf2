"""The MLP of every decoder layer: dense gate / up / down projections (separate or fused), or a mixture of
experts (router, routed experts, shared experts).

Every layer is inspected. A decoder may be dense for its first layers and MoE after them: the dense
projections are read from the dense layers and the MoE attributes from the MoE layers, and each answer is
``found`` only if it holds for every layer it applies to.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import textwrap
from dataclasses import dataclass

import torch
from torch import nn

from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.forward_analysis import evaluate_condition, gated_mlp_roles, walk_statements
from vlmforge.scaffold.research.module_tree import describe, is_linear, linear_shapes

__all__ = ["research_mlp"]

_ROLES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj")
_MOE_KEYS = ("moe_experts", "moe_router", "moe_shared_experts")


@dataclass(frozen=True)
class _MLPRoles:
    """Which Linear child of a dense MLP plays which role.

    Attributes:
        names: role -> attribute name (None: not told apart, or absent).
        linears: every Linear child by name.
        reason: how ``forward`` told gate from up (or the fused halves apart), when names could not.
    """

    names: dict[str, str | None]
    linears: dict[str, nn.Module]
    reason: str


def _experts_child(mlp: nn.Module) -> str | None:
    """The routed-experts child of a MoE MLP: named ``experts`` or an ``*Experts`` class."""
    for name, child in mlp.named_children():
        if name == "experts" or type(child).__name__.endswith("Experts"):
            return name
    return None


def research_mlp(mlps: list[nn.Module], hidden: int | None, report: ResearchReport) -> None:
    """Dense projections and MoE attributes of the decoder layers' MLP modules ``mlps``."""
    moe_layers = [i for i, mlp in enumerate(mlps) if _experts_child(mlp) is not None]
    dense_layers = [i for i in range(len(mlps)) if i not in moe_layers]
    layer_plan = _plan(dense_layers, moe_layers)
    if dense_layers:
        _research_dense([mlps[i] for i in dense_layers], dense_layers, hidden, layer_plan, report)
        for answer in _gate_transform_answers(
            [mlps[i] for i in dense_layers], dense_layers, report.value("gate_proj")
        ):
            report.add(answer)
    else:
        for role in _ROLES:
            report.add(Answer(role, _question(role), None, f"no dense MLP layer ({layer_plan})"))
        for key in (_TRANSFORM, _TRANSFORM_CONDITION):
            report.add(Answer(key, _question(key), None, f"no dense MLP layer ({layer_plan})"))
    if moe_layers:
        _research_moe([mlps[i] for i in moe_layers], moe_layers, hidden, layer_plan, report)
        report.add(_experts_slot_rows_answer(mlps[moe_layers[0]], report.value("moe_experts"), hidden))
    else:
        for key in _MOE_KEYS:
            report.add(
                Answer(key, _question(key), None, f"no mixture-of-experts layer ({layer_plan})", slot="moe")
            )
        report.add(Answer(_SLOT_ROWS, _SLOT_ROWS_QUESTION, False, "no mixture-of-experts layer"))


_TRANSFORM, _TRANSFORM_CONDITION = "gate_transform", "gate_transform_condition"


def _gate_transform_answers(mlps: list[nn.Module], layers: list[int], gate: str | None) -> list[Answer]:
    """The MLP method ``forward`` applies to the gate projection's output before the activation, and the
    MLP attribute saying on which layers.

    Read off ``forward``: a statement rebinding a local assigned from ``self.<gate>(...)`` through a
    ``self.<method>(...)`` call that is no child module (the activation is one, or an ``ACT2FN`` callable
    stored as an attribute, not a method of the class) is the transform. Its enclosing ``if`` test is
    evaluated on every built MLP; the condition is the one attribute of that test whose truthiness agrees
    with it on every layer (``activation_sparsity > 0.0`` -> ``activation_sparsity``).
    """
    question, condition_question = _question(_TRANSFORM), _question(_TRANSFORM_CONDITION)
    cls = type(mlps[0])
    none = [
        Answer(_TRANSFORM, question, None, f"{cls.__name__}.forward transforms no gate before activating it"),
        Answer(_TRANSFORM_CONDITION, condition_question, None, "no gate transform"),
    ]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError):
        return none
    if gate is None:
        return none
    function = tree.body[0]
    gates: set[str] = set()
    for statement, tests in walk_statements(getattr(function, "body", [])):
        if not isinstance(statement, ast.Assign):
            continue
        targets = {n.id for t in statement.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        calls = [
            node
            for node in ast.walk(statement.value)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
        ]
        if any(call.func.attr == gate for call in calls):
            gates |= targets
            continue
        methods = [
            call.func.attr
            for call in calls
            if inspect.isfunction(getattr(cls, call.func.attr, None))
            and {n.id for a in call.args for n in ast.walk(a) if isinstance(n, ast.Name)} & gates
        ]
        if len(methods) != 1 or not targets & gates:
            continue
        method = methods[0]
        evidence = f"{cls.__name__}.forward rebinds self.{gate}'s output through self.{method}(...)"
        if not tests:
            return [
                Answer(_TRANSFORM, question, method, evidence + " before the activation, on every layer"),
                Answer(_TRANSFORM_CONDITION, condition_question, None, "applied on every layer"),
            ]
        condition = _attribute_condition(tests, mlps)
        text = " and ".join(ast.unparse(test) for test in tests)
        holds = [layers[i] for i, mlp in enumerate(mlps) if all(evaluate_condition(t, mlp) for t in tests)]
        if condition is None:
            return [
                Answer(_TRANSFORM, question, method, evidence + f" under `{text}`", slot="modules"),
                Answer(
                    _TRANSFORM_CONDITION,
                    condition_question,
                    None,
                    f"`{text}` agrees with no MLP attribute's truthiness on every layer",
                    "hand_edit",
                    slot="modules",
                ),
            ]
        return [
            Answer(_TRANSFORM, question, method, evidence + f" before the activation, under `{text}`"),
            Answer(
                _TRANSFORM_CONDITION,
                condition_question,
                condition,
                f"`{text}` holds on layers {holds} of this config, exactly where `{condition}` does",
            ),
        ]
    return none


def _attribute_condition(tests: tuple[ast.expr, ...], mlps: list[nn.Module]) -> str | None:
    """``"x"`` / ``"not x"`` when a ``self.x`` read by ``tests`` is truthy (falsy) exactly where they hold."""
    holds = [all(evaluate_condition(test, mlp) for test in tests) for mlp in mlps]
    attributes = sorted(
        {
            node.attr
            for test in tests
            for node in ast.walk(test)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        }
    )
    for name in attributes:
        truthy = [bool(getattr(mlp, name, None)) for mlp in mlps]
        if truthy == holds:
            return name
        if [not value for value in truthy] == holds:
            return f"not {name}"
    return None


def _plan(dense: list[int], moe: list[int]) -> str:
    def spans(layers: list[int]) -> str:
        return ", ".join(str(i) for i in layers) if len(layers) <= 6 else f"{layers[0]}..{layers[-1]}"

    parts = [
        f"{label} layers {spans(layers)}" for label, layers in (("dense", dense), ("MoE", moe)) if layers
    ]
    return "; ".join(parts)


def _question(role: str) -> str:
    return {
        "gate_up_proj": "MLP fused gate+up projection",
        "moe_experts": "MoE: routed experts attribute",
        "moe_router": "MoE: router attribute",
        "moe_shared_experts": "MoE: shared experts attribute",
        "gate_transform": "MLP method transforming the gate before its activation",
        "gate_transform_condition": "MLP attribute selecting the layers that transform the gate",
    }.get(role, f"MLP {role.replace('_proj', '')} projection")


# ------------------------------------------------------------------------------------------------ dense
def _research_dense(
    mlps: list[nn.Module], layers: list[int], hidden: int | None, plan: str, report: ResearchReport
) -> None:
    per_layer = [_mlp_roles(mlp, hidden) for mlp in mlps]
    first = per_layer[0]
    cls = describe(mlps[0])
    differing = [layers[i] for i, roles in enumerate(per_layer) if roles.names != first.names]
    for role in _ROLES:
        if differing:
            names = {layers[i]: roles.names[role] for i, roles in enumerate(per_layer)}
            evidence = f"differs across the dense layers ({plan}): {names}"
            report.add(
                Answer(role, _question(role), first.names[role], evidence, "hand_edit", slot="modules")
            )
            continue
        report.add(_role_answer(role, cls, first, len(layers)))


def _mlp_roles(mlp: nn.Module, hidden: int | None) -> _MLPRoles:
    """Down maps back to ``hidden``; gate and up read it (named so, found in ``forward``, or fused)."""
    linears = {n: c for n, c in mlp.named_children() if is_linear(c)}
    downs = [n for n, c in linears.items() if c.out_features == hidden]
    ins = [n for n, c in linears.items() if c.in_features == hidden]
    gate = next((n for n in ins if "gate" in n), None)
    ups = [n for n in ins if n != gate]
    up = ups[0] if len(ups) == 1 else None
    down = downs[0] if len(downs) == 1 else None
    reason = ""
    if gate is None and len(ins) == 2:
        # Unconventional names (w1 / w3): the forward source says which one goes through the activation.
        gate, up, reason = gated_mlp_roles(type(mlp), ins)
    fused = None
    if gate is not None and up is None and len(ins) == 1 and down is not None:
        width = linears[gate].out_features
        if width == 2 * linears[down].in_features:
            fused, reason = _fused_order(type(mlp), gate)
            if fused is not None:
                gate = None
    names = {"gate_proj": gate, "up_proj": up, "down_proj": down, "gate_up_proj": fused}
    return _MLPRoles(names, linears, reason)


def _fused_order(mlp_class: type, name: str) -> tuple[str | None, str]:
    """A fused [gate; up] projection: ``forward`` must chunk its output in two and activate the FIRST half.

    Reads ``gate, up = self.<name>(x).chunk(2, dim=-1)`` then ``act(gate) * up`` (or the tensor-first
    spelling); anything else is not claimed.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(mlp_class.forward)))
    except (OSError, TypeError):
        return None, f"no source for {mlp_class.__name__}.forward"
    chunked: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Tuple)
            and len(node.targets[0].elts) == 2
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "chunk"
        ):
            chunked = [getattr(elt, "id", "") for elt in node.targets[0].elts]
    source = ast.unparse(tree)
    if len(chunked) == 2 and f"self.{name}(" in source:
        first, second = chunked
        activated = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and n.args
            and isinstance(n.args[0], ast.Name)
            and n.args[0].id in chunked
            and "act" in ast.unparse(n.func)
        ]
        if activated and all(call.args[0].id == first for call in activated):
            return name, (
                f"{mlp_class.__name__}.forward chunks self.{name}(x) into ({first}, {second}) and activates "
                f"{first}: gate half first"
            )
    return (
        None,
        f"{mlp_class.__name__}.forward does not show how self.{name}'s output splits into gate and up",
    )


def _role_answer(role: str, cls: str, roles: _MLPRoles, count: int) -> Answer:
    name = roles.names[role]
    shapes = linear_shapes(roles.linears) or "none"
    everywhere = f" (same on all {count} dense layers)" if count > 1 else ""
    fused = roles.names["gate_up_proj"]
    if role == "gate_up_proj":
        if fused is None:
            return Answer(role, _question(role), None, f"{cls} has no fused gate/up projection ({shapes})")
        return Answer(role, _question(role), fused, f"{roles.reason}{everywhere}")
    if fused is not None and role in ("gate_proj", "up_proj"):
        return Answer(role, _question(role), None, f"{cls}.{fused} is a fused gate+up projection{everywhere}")
    if name is not None:
        module = roles.linears[name]
        evidence = f"{cls}.{name}: Linear {module.in_features} -> {module.out_features}{everywhere}"
        if roles.reason and role != "down_proj":
            evidence += f"; {roles.reason}"
        return Answer(role, _question(role), name, evidence)
    if role == "gate_proj" and roles.names["up_proj"] is not None:
        return Answer(
            role, _question(role), None, f"{cls} is not gated: linear children {shapes}{everywhere}"
        )
    why = f"; {roles.reason}" if roles.reason else ""
    return Answer(
        role, _question(role), None, f"unknown: cannot tell {role} from {cls}'s {shapes}{why}", "unknown"
    )


# -------------------------------------------------------------------------------------------------- MoE
def _moe_attributes(mlp: nn.Module, hidden: int | None) -> dict[str, str | None]:
    """experts / router / shared experts of one MoE MLP, by structure.

    The router is the child holding a 2-D ``weight`` [n_experts, D] that is not a 1-wide gate (a shared
    expert's sigmoid gate is [1, D]); shared experts are a non-Linear child named ``shared*``.
    """
    experts = _experts_child(mlp)
    router = next(
        (
            name
            for name, child in mlp.named_children()
            if name != experts
            and getattr(getattr(child, "weight", None), "dim", lambda: 0)() == 2
            and child.weight.shape[-1] == hidden
            and child.weight.shape[0] > 1
            and "shared" not in name
        ),
        None,
    )
    shared = next(
        (name for name, child in mlp.named_children() if "shared" in name and not is_linear(child)), None
    )
    return {"moe_experts": experts, "moe_router": router, "moe_shared_experts": shared}


def _research_moe(
    mlps: list[nn.Module], layers: list[int], hidden: int | None, plan: str, report: ResearchReport
) -> None:
    per_layer = [_moe_attributes(mlp, hidden) for mlp in mlps]
    first, cls = per_layer[0], describe(mlps[0])
    uniform = all(attributes == first for attributes in per_layer)
    for key in _MOE_KEYS:
        value = first[key]
        if not uniform:
            names = {layers[i]: attributes[key] for i, attributes in enumerate(per_layer)}
            report.add(
                Answer(
                    key, _question(key), value, f"differs across MoE layers: {names}", "hand_edit", slot="moe"
                )
            )
            continue
        where = f"{cls}.{value}" if value else f"{cls} has none"
        evidence = f"{where} ({plan}; the same on every MoE layer)"
        if key == "moe_router" and value is not None:
            weight = getattr(mlps[0], value).weight
            evidence += f"; weight {tuple(weight.shape)} = [n_experts, D]: logits recomputed from it"
        status = "found" if value is not None or key == "moe_shared_experts" else "unknown"
        report.add(Answer(key, _question(key), value, evidence, status, slot="moe"))


_SLOT_ROWS = "moe_experts_slot_rows"
_SLOT_ROWS_QUESTION = "MoE: the experts return one row per (expert slot, token), summed by the MLP"
_PROBE_TOKENS = 3


def _experts_slot_rows_answer(mlp: nn.Module, experts: str | None, hidden: int | None) -> Answer:
    """Whether the experts' output has one row per (slot, token): measured by running the MoE MLP on a
    ``_PROBE_TOKENS``-token input on its own device (meta in research: shapes only), and the MLP's
    ``forward`` summing the experts' output over its first axis (``.sum(dim=0)``)."""
    if experts is None or not hidden:
        return Answer(
            _SLOT_ROWS, _SLOT_ROWS_QUESTION, False, "no routed experts found", "unknown", slot="moe"
        )
    # A bfloat16 copy: grouped-matmul expert kernels take no float32 (on meta only shapes are computed).
    probe = copy.deepcopy(mlp).to(torch.bfloat16)
    seen: list[int] = []
    handle = getattr(probe, experts).register_forward_hook(
        lambda _m, _a, output: seen.append(next(t for t in _tensors(output)).numel())
    )
    parameter = next(probe.parameters(), None)
    try:
        probe(
            torch.zeros(
                1,
                _PROBE_TOKENS,
                hidden,
                device=parameter.device if parameter is not None else None,
                dtype=torch.bfloat16,
            )
        )
    except Exception as error:  # a block that cannot run on meta: say so, do not guess
        return Answer(
            _SLOT_ROWS,
            _SLOT_ROWS_QUESTION,
            False,
            f"running {describe(mlp)} failed: {error!r}",
            "unknown",
            slot="moe",
        )
    finally:
        handle.remove()
    rows = seen[0] // hidden if seen else None
    cls = type(mlp).__name__
    if rows == _PROBE_TOKENS:
        return Answer(_SLOT_ROWS, _SLOT_ROWS_QUESTION, False, f"{cls}.{experts} returns one row per token")
    evidence = f"{cls}.{experts} returns {rows} rows for {_PROBE_TOKENS} tokens"
    try:
        source = inspect.getsource(type(mlp).forward)
    except (OSError, TypeError):
        source = ""
    summed = rows is not None and rows % _PROBE_TOKENS == 0 and re.search(r"\.sum\((dim=)?0\)", source)
    if not summed:
        return Answer(
            _SLOT_ROWS,
            _SLOT_ROWS_QUESTION,
            False,
            evidence + f"; {cls}.forward does not visibly sum them over the first (slot) axis",
            "hand_edit",
            slot="moe",
        )
    evidence += f" ({rows // _PROBE_TOKENS} slots, slot-major), which {cls}.forward sums with .sum(dim=0)"
    return Answer(_SLOT_ROWS, _SLOT_ROWS_QUESTION, True, evidence, slot="moe")


def _tensors(output: object) -> list[torch.Tensor]:
    items = output if isinstance(output, tuple | list) else (output,)
    return [t for t in items if isinstance(t, torch.Tensor)]
