"""The attention's score recipe: rotary function, per-head q/k norms, softmax scale, and anything beyond.

The generic ``compute_attention_scores`` projects, splits heads, optionally norms q/k per head, applies
one rotary function, repeats kv heads and scales. Each answer here is read off the attention class's
``forward`` (:mod:`.forward_analysis`) and the built modules, and says where the class departs from that.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport, Status
from vlmforge.scaffold.research.config_values import config_value
from vlmforge.scaffold.research.forward_analysis import (
    ForwardAnalysis,
    NormCall,
    RotaryCall,
    analyze_forward,
    evaluate_condition,
    walk_statements,
)
from vlmforge.scaffold.research.geometry import HeadGeometry
from vlmforge.scaffold.research.module_tree import describe, is_norm
from vlmforge.scaffold.research.projections import (
    ROLES,
    Projections,
    find_projections,
    fused_qkv,
    projection_answer,
    qkv_answer,
    query_gate,
)

__all__ = ["research_attention"]

_ROTARY_QUESTION = "Rotary function the attention calls"


@dataclass(frozen=True)
class _Condition:
    """The ``if`` tests around a call, evaluated on built attention modules.

    Attributes:
        text: the tests' source, ``and``-joined.
        holds: per module, whether they hold (None: they read runtime values).
    """

    text: str
    holds: tuple[bool | None, ...]

    @classmethod
    def of(cls, call: RotaryCall | NormCall, modules: Sequence[nn.Module]) -> _Condition | None:
        """None for an unconditional call."""
        if not call.conditions:
            return None
        holds = []
        for module in modules:
            results = [evaluate_condition(node, module) for node in call.condition_nodes]
            holds.append(None if None in results else all(results))
        return cls(" and ".join(call.conditions), tuple(holds))

    @property
    def runtime(self) -> bool:
        """Some module cannot tell without runtime values."""
        return None in self.holds

    @property
    def everywhere(self) -> bool:
        return not self.runtime and all(self.holds)

    @property
    def nowhere(self) -> bool:
        return not self.runtime and not self.everywhere and not any(self.holds)

    @property
    def partial(self) -> bool:
        """Decided on every module, but holding on some only."""
        return not (self.runtime or self.everywhere or self.nowhere)


def research_attention(
    attn: nn.Module,
    layers: list[nn.Module],
    attention_name: str,
    geometry: HeadGeometry,
    text_config: PretrainedConfig,
    report: ResearchReport,
) -> None:
    """Projections, rotary function, q/k norms, scaling and extras of the attention module ``attn``."""
    projections = find_projections(attn, geometry)
    for role in ROLES:
        report.add(projection_answer(role, attn, projections, geometry))
    report.add(qkv_answer(attn, projections, geometry))
    gated = query_gate(attn, geometry)
    report.add(
        Answer(
            "query_gate",
            "q_proj also computes a per-head output gate",
            gated,
            f"{type(attn).__name__}: q_proj is 2 x heads x head_dim wide, chunked per head, "
            "output * sigmoid(gate)"
            if gated
            else f"{type(attn).__name__}.q_proj computes the query only",
        )
    )
    norms = [n for n, c in attn.named_children() if is_norm(c)]
    analysis = analyze_forward(
        type(attn),
        q_proj=projections.names["q_proj"],
        k_proj=projections.names["k_proj"],
        norm_attributes=norms,
        qkv_proj=fused_qkv(projections, geometry),
    )
    modules = [getattr(layer, attention_name) for layer in layers if hasattr(layer, attention_name)]
    has_rope = any(
        config_value(text_config, key) for key in ("rope_parameters", "rope_scaling", "rope_theta")
    )
    rotary = _rotary_answer(analysis, type(attn).__name__, modules, len(layers), has_rope)
    report.add(rotary)
    report.add(_rotary_condition_answer(analysis, modules, rotary))
    report.add(_rotary_convention_answer(analysis, rotary))
    for role, variable in (("q_norm", analysis.query_var), ("k_norm", analysis.key_var)):
        report.add(_qk_norm_answer(role, variable, analysis, attn, norms, geometry.head_dim))
    report.add(_norms_after_rotary_answer(analysis, report))
    report.add(_norms_where_present_answer(analysis, report))
    temperature = _query_temperature_answer(analysis, attn)
    report.add(temperature)
    report.add(_scaling_answer(analysis, attn, geometry.head_dim))
    report.add(_extras_answer(analysis, attn, gated, modules, temperature.value is not None))
    report.add(_v_norm_answer(attn, projections.names["v_proj"], norms, geometry.head_dim))
    report.add(_kv_shared_answer(modules, projections.names["k_proj"], analysis))
    qk_norms = {report.value("q_norm"), report.value("k_norm"), report.value("v_norm")}
    report.add(_output_norm_answer(analysis, attn, [n for n in norms if n not in qk_norms], projections))


# ------------------------------------------------------------------------------------- v norm / kv sharing
def _forward_body(cls: type) -> list[ast.stmt] | None:
    """The statements of ``cls.forward`` (None: no source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError):
        return None
    function = tree.body[0]
    return function.body if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _self_calls(node: ast.AST) -> set[str]:
    """Names ``x`` of every ``self.x(...)`` call inside ``node``."""
    return {
        call.func.attr
        for call in ast.walk(node)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "self"
    }


def _assigned_names(statement: ast.stmt) -> set[str]:
    targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
    return {
        node.id
        for target in targets
        if target is not None
        for node in ast.walk(target)
        if isinstance(node, ast.Name)
    }


def _v_norm_answer(attn: nn.Module, v_proj: str | None, norms: list[str], head_dim: int | None) -> Answer:
    """The norm ``forward`` applies to the values between ``v_proj`` and the attention kernel, if any.

    Follows the locals assigned from ``self.<v_proj>(...)`` through statements that read only them (the
    kernel call also reads the query, so the flow stops there): a norm child called on them is the value
    norm. It must be per head (``head_dim`` wide) or scale-free, as the hook reference applies it per head.
    """
    question = "Per-head value norm before attending"
    cls = type(attn).__name__
    body = _forward_body(type(attn)) if v_proj is not None else None
    if body is None:
        why = "no separate v projection" if v_proj is None else f"no source for {cls}.forward"
        return Answer("v_norm", question, None, f"{why}: no value norm to find")
    values: set[str] = set()
    found: list[str] = []
    for statement, _conditions in walk_statements(body):
        if not isinstance(statement, ast.Assign | ast.AnnAssign) or statement.value is None:
            continue
        calls, read = (
            _self_calls(statement.value),
            {n.id for n in ast.walk(statement.value) if isinstance(n, ast.Name) and n.id != "self"},
        )
        if v_proj in calls:
            values |= _assigned_names(statement)
        elif read and read <= values:
            found += [name for name in calls if name in norms and name not in found]
            values |= _assigned_names(statement)
    if not found:
        return Answer("v_norm", question, None, f"{cls}.forward applies no norm to the values of {v_proj}")
    if len(found) > 1:
        evidence = f"{cls}.forward applies several norms to the values: {found}"
        return Answer("v_norm", question, None, evidence, "hand_edit", slot="attention_recipe")
    norm = found[0]
    width = _norm_width(getattr(attn, norm))
    evidence = f"{cls}.forward applies self.{norm} ({describe(getattr(attn, norm))}) to {v_proj}'s values"
    if width is not None and width != head_dim:
        evidence += f", {width} wide, not one head ({head_dim}): the adapter applies value norms per head"
        return Answer("v_norm", question, None, evidence, "hand_edit", slot="attention_recipe")
    return Answer("v_norm", question, norm, evidence + (" (per head)" if width else " (scale-free)"))


def _kv_shared_answer(modules: list[nn.Module], k_proj: str | None, analysis: ForwardAnalysis) -> Answer:
    """The attention attribute true exactly on the layers without a key projection of their own.

    Such layers attend with keys another layer computed (Gemma3n's KV sharing): which layers is read off
    the built modules (the key projection is missing there), and the attribute naming them is the boolean
    attribute of every attention module that is true (or false) on exactly those layers, preferring one
    ``forward`` reads.
    """
    question = "Layers attending with another layer's keys and values"
    if k_proj is None or not modules:
        evidence = "no separate key projection: every layer computes its keys"
        return Answer("kv_shared", question, None, evidence)
    cls = type(modules[0]).__name__
    shared = [not hasattr(module, k_proj) for module in modules]
    if not any(shared):
        return Answer("kv_shared", question, None, f"every layer's {cls} has its own {k_proj}")
    layers = [i for i, flag in enumerate(shared) if flag]
    flags = sorted(
        {
            name
            for name, value in vars(modules[0]).items()
            if isinstance(value, bool) and all(isinstance(vars(m).get(name), bool) for m in modules)
        },
        key=lambda name: (name not in analysis.references, name),
    )
    for name in flags:
        values = [bool(getattr(module, name)) for module in modules]
        for condition, expected in ((name, shared), (f"not {name}", [not flag for flag in shared])):
            if values == expected:
                evidence = (
                    f"layers {layers} have no {cls}.{k_proj} (their keys come from another layer); "
                    f"`{condition}` holds on exactly those"
                )
                return Answer("kv_shared", question, condition, evidence, slot="attention_recipe")
    evidence = f"layers {layers} have no {cls}.{k_proj}, and no boolean attribute of {cls} marks exactly them"
    return Answer("kv_shared", question, None, evidence, "hand_edit", slot="attention_recipe")


def _output_norm_answer(
    analysis: ForwardAnalysis, attn: nn.Module, norms: list[str], projections: Projections
) -> Answer:
    """The norm ``forward`` applies to the concatenated head outputs before ``o_proj``, if any.

    A norm child that is no q/k norm, that ``forward`` uses, and that is exactly as wide as ``o_proj``'s
    input (all heads' values together) can only normalise what ``o_proj`` reads (Kosmos-2's
    ``inner_attn_ln``); the conformance harness checks ``attn.hook_z`` against ``norm(pattern @ v)``.
    """
    cls = type(attn).__name__
    question = "Norm over the concatenated head outputs before o_proj"
    o_proj = getattr(attn, projections.names.get("o_proj") or "", None)
    width = getattr(o_proj, "in_features", None)
    used = [n for n in norms if n in analysis.references]
    fitting = [n for n in used if _norm_width(getattr(attn, n)) == width]
    if not fitting:
        evidence = f"{cls}.forward uses no norm as wide as o_proj's input ({width})"
        if used:
            evidence += f" besides the q/k norms (other norms used: {used})"
        return Answer("output_norm", question, None, evidence, slot="attention_recipe")
    evidence = (
        f"{cls}.forward uses self.{fitting[0]} ({describe(getattr(attn, fitting[0]))}), {width} wide like "
        "o_proj's input and no q/k norm: it normalises the concatenated head outputs"
    )
    if len(fitting) > 1:
        evidence = (
            f"{cls}.forward uses several norms as wide as o_proj's input: {fitting}; which one is unknown"
        )
        return Answer("output_norm", question, None, evidence, "hand_edit", slot="attention_recipe")
    return Answer("output_norm", question, fitting[0], evidence, slot="attention_recipe")


def _norm_width(norm: nn.Module) -> int | None:
    weight = getattr(norm, "weight", None)
    return weight.shape[-1] if isinstance(weight, torch.Tensor) and weight.dim() else None


# --------------------------------------------------------------------------------------------- rotary
def _rotary_answer(
    analysis: ForwardAnalysis, cls: str, modules: list[nn.Module], layer_count: int, has_rope: bool
) -> Answer:
    if not analysis.source_available:
        return Answer(
            "rotary_function", _ROTARY_QUESTION, None, f"unknown: no source for {cls}.forward", "unknown"
        )
    calls: dict[str, RotaryCall] = {}
    for call in analysis.rotary_calls:
        # The first call of each function: the query's, where q and k are rotated in separate calls.
        calls.setdefault(call.dotted_path, call)
    if not calls and has_rope:
        evidence = (
            f"unknown: {cls}.forward calls no *rotary*/*rope* function although the text config has RoPE "
            "parameters; find where RoPE is applied"
        )
        return Answer("rotary_function", _ROTARY_QUESTION, None, evidence, "unknown")
    if not calls:
        evidence = f"{cls}.forward calls no rotary function and the text config has no RoPE parameters"
        return Answer("rotary_function", _ROTARY_QUESTION, None, evidence)
    if len(calls) > 1:
        evidence = f"unknown: {cls}.forward calls several rotary functions: {sorted(calls)}"
        return Answer("rotary_function", _ROTARY_QUESTION, None, evidence, "unknown")
    call = next(iter(calls.values()))
    evidence = f"{cls}.forward calls {call.source}"
    if call.defined_in != analysis.module:
        evidence += f" (imported from {call.defined_in})"
    status: Status = "found"
    value: str | None = call.dotted_path
    mismatch = _rotary_signature_mismatch(call)
    if mismatch:
        status, evidence = "hand_edit", f"{evidence}; {mismatch}"
    condition = _Condition.of(call, modules)
    if condition is not None:
        evidence += _rotary_condition_clause(condition, layer_count)
        attribute = _condition_attribute(call)
        if condition.partial and attribute is not None:
            evidence += f" (spec attention.rotary_condition = {attribute!r}: the adapter checks it per layer)"
        elif condition.runtime or condition.partial:  # no per-layer attribute says where RoPE applies
            status = "hand_edit"
        if condition.nowhere:
            value = None
    return Answer("rotary_function", _ROTARY_QUESTION, value, evidence, status)


def _condition_attribute(call: RotaryCall) -> str | None:
    """``"x"`` / ``"not x"`` when the rotary call is guarded by one test of a module attribute:
    ``self.x``, ``self.x is not None`` (truthy) or ``not self.x``, ``self.x is None`` (falsy)."""
    if len(call.condition_nodes) != 1:
        return None
    node, negated = call.condition_nodes[0], False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        node, negated = node.operand, True
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.comparators[0], ast.Constant)
        and node.comparators[0].value is None
        and isinstance(node.ops[0], ast.Is | ast.IsNot)
    ):
        negated ^= isinstance(node.ops[0], ast.Is)
        node = node.left
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"not {node.attr}" if negated else node.attr
    return None


def _rotary_condition_answer(analysis: ForwardAnalysis, modules: list[nn.Module], rotary: Answer) -> Answer:
    """The attention attribute saying per layer whether RoPE applies (None: RoPE on every layer)."""
    question = "Attention attribute gating RoPE per layer"
    calls = analysis.rotary_calls
    call = calls[0] if len(calls) == 1 and rotary.value is not None else None
    condition = _Condition.of(call, modules) if call is not None else None
    if condition is None or not condition.partial:
        return Answer("rotary_condition", question, None, "RoPE is applied on every layer that has attention")
    attribute = _condition_attribute(call)
    if attribute is None:
        return Answer(
            "rotary_condition", question, None, f"`{condition.text}` is not one attribute test", "hand_edit"
        )
    return Answer(
        "rotary_condition",
        question,
        attribute,
        f"{analysis.class_name}.forward applies RoPE only if `{condition.text}` (per layer: "
        f"{list(condition.holds)})",
        slot="attention_recipe",
    )


def _rotary_condition_clause(condition: _Condition, layer_count: int) -> str:
    if condition.runtime:
        return f"; applied only if `{condition.text}`, which depends on runtime values: check by hand"
    if condition.everywhere:
        return f"; applied under `{condition.text}`, which holds on all {layer_count} layers of this config"
    if condition.nowhere:
        return f"; but `{condition.text}` is false on every layer of this config, so no rotary is applied"
    applied = [i for i, holds in enumerate(condition.holds) if holds]
    return (
        f"; applied only where `{condition.text}` holds (layers {applied}); the adapter applies one "
        "rotary recipe to every layer"
    )


def _rotary_signature_mismatch(call: RotaryCall) -> str | None:
    """How the call differs from the adapter's ``rotary(q, k, cos, sin)`` on [B, H, L, d_h] tensors."""
    signature = inspect.signature(call.function)
    required = [
        p
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    extra_keywords = [k for k in call.keywords if k not in ("unsqueeze_dim", "position_ids")]
    if call.positional_args == 4 and len(required) <= 4 and not extra_keywords:
        return None
    if call.positional_args == 3 and len(required) <= 3 and not extra_keywords:
        return None  # rotary(q, k, freqs): the recipe's rotary_convention "freqs_tokens_first"
    return (
        f"signature {call.name}{signature} / call with {call.positional_args} positional args "
        f"{extra_keywords or ''} differs from the adapter's rotary(q, k, cos, sin)"
    )


# -------------------------------------------------------------------------------------------- q/k norm
def _qk_norm_answer(
    role: str,
    variable: str | None,
    analysis: ForwardAnalysis,
    attn: nn.Module,
    norms: list[str],
    head_dim: int | None,
) -> Answer:
    """Whether (and which) norm ``forward`` applies to q (``q_norm``) or k (``k_norm``), before RoPE."""
    cls = type(attn).__name__
    question = f"Per-head {role.replace('_', ' ')} before RoPE"
    written = [call for call in analysis.norm_calls if variable and call.variable == variable]
    # Calls under a test that is false on this module never run (Molmo2 norms either the whole projection
    # or each head, by config): only the calls that run here count.
    applied = [c for c in written if (condition := _Condition.of(c, [attn])) is None or not condition.nowhere]
    if written and not applied:
        tests = sorted({" and ".join(c.conditions) for c in written})
        evidence = f"{cls}.forward applies a norm to {variable} only under {tests}, false on this config"
        return Answer(role, question, None, evidence)
    if not applied:
        evidence = f"{cls}.forward applies no norm to {variable or role[0]}"
        if norms:
            evidence += f" (norm children {norms} are not applied to it)"
        return Answer(role, question, None, evidence)
    call = applied[0]
    norm = getattr(attn, call.attribute)
    weight = getattr(norm, "weight", None)
    width = weight.shape[-1] if isinstance(weight, torch.Tensor) and weight.dim() else None
    evidence = f"{cls}.forward applies self.{call.attribute} ({describe(norm)}, width {width}) to {variable}"
    # Where RoPE reaches this tensor: a forward rotating q and k in separate calls (Gemma3n's
    # apply_rotary_pos_emb(x, cos, sin)) rotates q before it norms k; the k norm still precedes k's RoPE.
    own = [c.line for c in analysis.rotary_calls if variable in c.variables]
    problems = _qk_norm_problems(applied, min(own) if own else analysis.rotary_line, width, head_dim)
    status: Status = "hand_edit" if problems else "found"
    evidence += "".join(f"; {problem}" for problem in problems)
    condition = _Condition.of(call, [attn])
    if condition is not None:
        if condition.runtime:
            status, evidence = "hand_edit", evidence + f"; only if `{condition.text}` (a runtime value)"
        elif condition.nowhere:
            return Answer(role, question, None, evidence + f"; but `{condition.text}` is false here")
        else:
            evidence += f"; under `{condition.text}`, which holds here"
    return Answer(role, question, call.attribute, evidence, status, slot=role)


def _qk_norm_problems(
    applied: list[NormCall], rotary_line: int | None, width: int | None, head_dim: int | None
) -> list[str]:
    """What keeps the generic per-head norm-before-RoPE from reproducing the norms ``applied``."""
    problems = []
    if len(applied) > 1:
        problems.append(f"several norms apply to it: {[c.attribute for c in applied]}")
    if rotary_line is not None and len({call.line > rotary_line for call in applied}) > 1:
        problems.append("some before RoPE, some after (the recipe applies both norms on one side of it)")
    if width is not None and head_dim and width % head_dim:
        # A norm one head wide runs per head, one heads*d_h wide over the whole projection (the adapter
        # applies it at its own width); anything else does not fit.
        problems.append(f"normalises {width} features, neither one head ({head_dim}) nor whole heads")
    return problems


def _rotary_convention_answer(analysis: ForwardAnalysis, rotary: Answer) -> Answer:
    """``cos_sin`` for ``rotary(q, k, cos, sin)`` on head-first q/k, ``freqs_tokens_first`` for
    ``rotary(q, k, freqs)`` called before the head transpose (Llama4's complex ``freqs_cis``)."""
    question = "How the rotary function is called"
    calls = analysis.rotary_calls
    per_tensor = [call for call in calls if call.positional_args == 3 and len(call.variables) >= 1]
    one_function = len({call.dotted_path for call in calls}) == 1
    if rotary.value is not None and len(calls) > 1 and one_function and len(per_tensor) == len(calls):
        # One call per rotated tensor (q, then k): rotary(x, cos, sin). The tiny model confirms it
        # (research.rotary_convention measures every convention against eager attention).
        rotated = [call.variables[0] for call in calls]
        evidence = (
            f"{analysis.class_name}.forward calls {calls[0].name} once per tensor ({', '.join(rotated)}), "
            "each with 3 positional args"
        )
        return Answer("rotary_convention", question, "per_tensor", evidence, slot="attention_recipe")
    if rotary.value is None or len(calls) != 1:
        return Answer("rotary_convention", question, "cos_sin", "no single rotary call: the default")
    call = calls[0]
    tokens_first = analysis.transpose_line is None or (
        analysis.rotary_line is not None and analysis.transpose_line > analysis.rotary_line
    )
    where = (
        "before the query's head transpose (q/k are [B, L, H, d_h])"
        if tokens_first
        else "after the query's head transpose (q/k are [B, H, L, d_h])"
    )
    evidence = (
        f"{analysis.class_name}.forward calls {call.name} with {call.positional_args} positional args {where}"
    )
    if call.positional_args == 4 and not tokens_first:
        return Answer("rotary_convention", question, "cos_sin", evidence)
    if call.positional_args == 3 and tokens_first:
        return Answer("rotary_convention", question, "freqs_tokens_first", evidence, slot="attention_recipe")
    return Answer(
        "rotary_convention",
        question,
        "cos_sin",
        evidence + ": neither rotary(q, k, cos, sin) head-first nor rotary(q, k, freqs) tokens-first",
        "hand_edit",
        slot="attention_recipe",
    )


def _norms_after_rotary_answer(analysis: ForwardAnalysis, report: ResearchReport) -> Answer:
    """Whether the q/k norms found run after the rotary call (source order in ``forward``)."""
    question = "q/k norms applied after RoPE"
    names = {report.value("q_norm"), report.value("k_norm")} - {None}
    calls = [call for call in analysis.norm_calls if call.attribute in names]
    if not calls or analysis.rotary_line is None:
        return Answer("norms_after_rotary", question, False, "no q/k norm, or no RoPE: nothing to order")
    after = all(call.line > analysis.rotary_line for call in calls)
    order = "after" if after else "before"
    evidence = f"{analysis.class_name}.forward applies {sorted(names)} {order} its rotary call"
    return Answer("norms_after_rotary", question, after, evidence, slot="attention_recipe" if after else None)


def _norms_where_present_answer(analysis: ForwardAnalysis, report: ResearchReport) -> Answer:
    """Whether the q/k norms run under ``hasattr(self, <norm>)`` (built on some layers only)."""
    question = "q/k norms applied only where the attention has them"
    names = {report.value("q_norm"), report.value("k_norm")} - {None}
    calls = [call for call in analysis.norm_calls if call.attribute in names]
    guarded = bool(calls) and all(
        any(f"hasattr(self, {call.attribute!r})" in text.replace('"', "'") for text in call.conditions)
        for call in calls
    )
    evidence = (
        f"{analysis.class_name}.forward applies {sorted(names)} under `hasattr(self, ...)`"
        if guarded
        else "the q/k norms (if any) are not guarded by hasattr"
    )
    return Answer(
        "norms_where_present", question, guarded, evidence, slot="attention_recipe" if guarded else None
    )


# The module attributes the inline temperature formula reads; the adapter implements exactly that formula.
_TEMPERATURE_ATTRIBUTES = ("floor_scale", "attn_scale")


def _query_temperature_answer(analysis: ForwardAnalysis, attn: nn.Module) -> Answer:
    """The condition under which ``forward`` scales q by ``log1p(floor((pos + 1) / floor_scale)) *
    attn_scale + 1``: a q-pipeline multiplication by a local, with the formula's attributes read and
    ``log1p`` / ``floor`` in the source."""
    question = "Position-dependent query temperature (and on which layers)"
    if analysis.query_scale is None:
        return Answer(
            "query_temperature", question, None, f"{analysis.class_name}.forward scales q by no local"
        )
    statement, conditions, nodes = analysis.query_scale
    try:
        source = inspect.getsource(type(attn).forward)
    except (OSError, TypeError):
        source = ""
    formula = all(name in analysis.references for name in _TEMPERATURE_ATTRIBUTES) and all(
        word in source for word in ("log1p", "floor")
    )
    condition = _attribute_conjunction(nodes)
    evidence = f"{analysis.class_name}.forward: `{statement}`" + (
        f" under `{' and '.join(conditions)}`" if conditions else ""
    )
    if not formula or (nodes and condition is None):
        reason = (
            "not the log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1 temperature"
            if not formula
            else "its condition is not a conjunction of attribute tests"
        )
        return Answer(
            "query_temperature", question, None, f"{evidence}: {reason}", "hand_edit", slot="attention_recipe"
        )
    value = condition or _TEMPERATURE_ATTRIBUTES[0]  # unconditional: every layer has the attributes
    evidence += f"; reads self.{' and self.'.join(_TEMPERATURE_ATTRIBUTES)} with log1p/floor"
    return Answer("query_temperature", question, value, evidence, slot="attention_recipe")


def _attribute_conjunction(nodes: Sequence[ast.expr]) -> str | None:
    """``"a and not b"`` for if-tests that are ``self.a`` / ``not self.b`` joined by ``and``; else None."""
    tests: list[ast.expr] = []
    for node in nodes:
        tests += node.values if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And) else [node]
    parts = []
    for test in tests:
        negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
        inner = test.operand if negated else test
        if not (
            isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == "self"
        ):
            return None
        parts.append(f"not {inner.attr}" if negated else inner.attr)
    return " and ".join(parts) or None


# --------------------------------------------------------------------------------------- scale, extras
def _scaling_answer(analysis: ForwardAnalysis, attn: nn.Module, head_dim: int | None) -> Answer:
    """The attribute holding the softmax scale: passed as ``scaling=self.X``, else a numeric ``scaling``."""
    cls = type(attn).__name__
    question = "Softmax scale attribute"
    name = analysis.scaling_attribute
    if name is None and isinstance(getattr(attn, "scaling", None), int | float):
        name = "scaling"
    value = getattr(attn, name, None) if name else None
    if not (name and isinstance(value, int | float)):
        return Answer(
            "scaling",
            question,
            None,
            f"unknown: {cls} passes no scaling=self.<attr> to its attention kernel and has no numeric "
            "`scaling`; the adapter would fall back to head_dim**-0.5",
            "unknown",
        )
    default = head_dim**-0.5 if head_dim else None
    relation = (
        "= head_dim**-0.5" if default and abs(value - default) < 1e-9 else f"(head_dim**-0.5 = {default})"
    )
    source = "passed as scaling=self." + name if analysis.scaling_attribute else "attribute"
    return Answer("scaling", question, name, f"{cls}.{name} = {value:.6g} {relation}; {source}")


def _score_extras(
    analysis: ForwardAnalysis,
    attn: nn.Module,
    gated: bool,
    modules: Sequence[nn.Module],
    temperature: bool = False,
) -> list[str]:
    """Anything in the score computation beyond the recipe: softcapping, sinks, unknown q/k transforms.

    With a gated query (``gated``), the statement splitting q_proj's output into query and gate is the
    recipe's ``query_gate``, not an extra; with a recognised query temperature (``temperature``), the
    statement applying it is the recipe's ``query_temperature``; and a statement on a branch that none
    of the decoder's attention ``modules`` takes is no extra either (IDEFICS' cross-attention and q/k
    layer-norm branches, off in its self-attention).
    """
    extras: list[str] = []
    softcap = analysis.kernel_keywords.get("softcap")
    softcap_value = getattr(attn, "attn_logit_softcapping", None)
    if softcap_value is not None or (softcap and softcap not in ("None",)):
        extras.append(f"logit softcapping (softcap={softcap}, attn_logit_softcapping={softcap_value})")
    for key in ("sinks", "s_aux"):
        if key in analysis.kernel_keywords:
            extras.append(f"attention sinks ({key}={analysis.kernel_keywords[key]})")
    extras += [
        f"unrecognized q/k transformation `{line}`"
        for line, conditions in zip(analysis.unrecognized, analysis.unrecognized_conditions, strict=True)
        if not (gated and "chunk(" in line and "self.q_proj(" in line)
        and not (temperature and analysis.query_scale is not None and line == analysis.query_scale[0])
        and not _dead(conditions, modules)
    ]
    if not analysis.source_available:
        extras.append(f"no source for {type(attn).__name__}.forward")
    return extras


def _dead(conditions: tuple[ast.expr, ...], modules: Sequence[nn.Module]) -> bool:
    """Whether some of ``conditions`` is decided false on every module (the branch never runs here)."""
    return bool(conditions and modules) and all(
        any(evaluate_condition(node, module) is False for node in conditions) for module in modules
    )


def _extras_answer(
    analysis: ForwardAnalysis,
    attn: nn.Module,
    gated: bool,
    modules: Sequence[nn.Module],
    temperature: bool = False,
) -> Answer:
    cls = type(attn).__name__
    extras = _score_extras(analysis, attn, gated, modules, temperature)
    return Answer(
        "attention_extras",
        "Score computation beyond project/norm/RoPE/GQA/scale",
        "; ".join(extras) or "none",
        (f"{cls}.forward: " + "; ".join(extras) + ": compute_attention_scores needs an override")
        if extras
        else f"{cls}.forward does nothing to q/k beyond the generic recipe "
        f"(kernel keywords: {sorted(analysis.kernel_keywords)})",
        "hand_edit" if extras else "found",
        slot="attention_recipe",
    )
