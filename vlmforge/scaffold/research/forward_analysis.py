"""Static analysis of an attention module's ``forward``: what it does to q and k before the softmax.

The generic :meth:`vlmforge.core.adapter.ModelAdapter.compute_attention_scores` reproduces one recipe:
project, split heads, optional per-head q/k norm, optional rotary, repeat kv heads, matmul, scale. This
module reads the attention class's source (the code transformers itself runs, so it is the ground
truth) and reports which parts of that recipe it uses and anything it does that the recipe cannot
express, so the scaffolder can answer "which rotary function" with evidence and flag what needs a
hand edit instead of guessing.

Nothing here executes model code except :func:`evaluate_condition`, which evaluates an ``if`` test that
only reads attributes of ``self`` (e.g. ``self.use_rope``) on already-built attention modules. A test on a
local assigned once at the top of ``forward`` is read through that assignment, and a second sequence the
module could attend to (``key_value_states=None``) is absent: the module is researched as the decoder's
self-attention, whose call passes none (IDEFICS' ``is_cross_attention = self.is_cross_attention or
key_value_states is not None`` is then decided per module).
"""

from __future__ import annotations

import ast
import copy
import inspect
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmforge.scaffold.research.module_tree import OWN_STATES

__all__ = [
    "ForwardAnalysis",
    "NormCall",
    "RotaryCall",
    "analyze_forward",
    "evaluate_condition",
    "gated_mlp_roles",
]

# Tensor methods that only reshape / move a tensor; they never change the scores.
_SHAPE_METHODS = frozenset(
    {
        "view",
        "reshape",
        "transpose",
        "contiguous",
        "to",
        "unflatten",
        "flatten",
        "permute",
        "float",
        "type_as",
    }
)
# Calls that feed the kv-cache; they change nothing about the current step's scores.
_CACHE_METHODS = frozenset({"update"})
# Builtins a condition on ``self`` may use; anything else makes the condition "runtime dependent".
_CONDITION_BUILTINS = {"hasattr": hasattr, "getattr": getattr, "isinstance": isinstance, "len": len}


@dataclass(frozen=True)
class RotaryCall:
    """One call of a rotary-embedding function inside ``forward``.

    Attributes:
        name: the called global name (``apply_rotary_pos_emb``).
        function: the function object it resolves to in the attention's module.
        dotted_path: ``<attention's module>.<name>``, importable.
        defined_in: the module that defines the function (may differ when it was imported).
        source: the call's source text.
        conditions: source of every enclosing ``if`` test, outermost first (empty: unconditional).
        condition_nodes: the same tests as AST nodes, for :func:`evaluate_condition`.
        positional_args: number of positional arguments passed.
        keywords: keyword argument names passed.
        line: source line of the statement (relative to ``forward``, as :attr:`NormCall.line`).
        variables: the plain names passed as arguments (``query_states``): which tensors it rotates.
    """

    name: str
    function: Callable[..., Any]
    dotted_path: str
    defined_in: str
    source: str
    conditions: tuple[str, ...]
    condition_nodes: tuple[ast.expr, ...]
    positional_args: int
    keywords: tuple[str, ...]
    line: int = 0
    variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class NormCall:
    """A norm submodule applied to q or k.

    Attributes:
        attribute: the norm's attribute name on the attention module (``q_norm``).
        variable: the local it is applied to (``query_states``).
        line: source line (relative to ``forward``), to compare with the rotary call.
        conditions: source of the enclosing ``if`` tests.
        condition_nodes: the same tests as AST nodes.
    """

    attribute: str
    variable: str
    line: int
    conditions: tuple[str, ...]
    condition_nodes: tuple[ast.expr, ...]


@dataclass
class ForwardAnalysis:
    """What an attention ``forward`` does between the projections and the attention kernel.

    Attributes:
        class_name / module: the attention class and the module it lives in.
        source_available: False when the source could not be read (then everything else is empty).
        rotary_calls: calls of functions whose name mentions ``rotary`` / ``rope``.
        qkv_var: the local holding a fused q/k/v projection's output (``None``: separate projections).
        query_var / key_var: local names holding q / k after their projection (after the split of a fused
            one: the first and second name it is unpacked into, or the first and second name sliced from it).
        norm_calls: ``self.<attr>(...)`` norm calls in the q / k pipelines, in source order.
        rotary_line: line of the first rotary call (to check norms come before it).
        transpose_line: line of the first q-pipeline statement that transposes the query (the head split
            ``[B, L, H, d_h] -> [B, H, L, d_h]``); after ``rotary_line`` (or never), RoPE runs tokens-first.
        query_scale: source of a statement multiplying the query by a local (``q * attn_scales``), the
            inline query temperature, with its enclosing ``if`` tests (None: none).
        scaling_attribute: ``X`` in a ``scaling=self.X`` keyword of the attention-kernel call.
        kernel_keywords: keyword names passed to that call (``softcap``, ``sinks``, ``sliding_window``...).
        unrecognized: source of statements that transform q or k in a way the generic recipe lacks.
        unrecognized_conditions: the enclosing ``if`` tests of each of them (as for ``condition_nodes``),
            so a statement on a branch no built module takes is told apart.
        references: every ``self.<attr>`` read in ``forward``.
    """

    class_name: str
    module: str
    source_available: bool = True
    rotary_calls: list[RotaryCall] = field(default_factory=list)
    qkv_var: str | None = None
    query_var: str | None = None
    key_var: str | None = None
    norm_calls: list[NormCall] = field(default_factory=list)
    rotary_line: int | None = None
    transpose_line: int | None = None
    query_scale: tuple[str, tuple[str, ...], tuple[ast.expr, ...]] | None = None
    scaling_attribute: str | None = None
    kernel_keywords: dict[str, str] = field(default_factory=dict)
    unrecognized: list[str] = field(default_factory=list)
    unrecognized_conditions: list[tuple[ast.expr, ...]] = field(default_factory=list)
    references: set[str] = field(default_factory=set)


def _self_attribute(node: ast.AST) -> str | None:
    """``self.x`` -> ``"x"``; anything else -> None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _calls_self_attribute(node: ast.AST, attribute: str) -> bool:
    return any(isinstance(sub, ast.Call) and _self_attribute(sub.func) == attribute for sub in ast.walk(node))


def _names_in(node: ast.AST) -> set[str]:
    return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}


def _known_locals(function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, ast.expr]:
    """Names whose value an ``if`` test may be read through: name -> expression.

    A local assigned exactly once, at the top level of ``forward`` (not inside a branch), is its assigned
    expression. A parameter taking a second sequence's states (``key_value_states``,
    ``encoder_hidden_states``) that defaults to None is None: the module is researched as the decoder's
    self-attention, which is called without one (else it would be a cross-attention).
    """
    known: dict[str, ast.expr] = {}
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults = dict(
        zip([a.arg for a in positional[len(positional) - len(arguments.defaults) :]], arguments.defaults)
    )
    defaults |= {a.arg: d for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults) if d is not None}
    for name, default in defaults.items():
        if (
            name.endswith("_states")
            and name not in OWN_STATES
            and isinstance(default, ast.Constant)
            and default.value is None
        ):
            known[name] = default
    stores = Counter(
        sub.id for sub in ast.walk(function) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)
    )
    for statement in function.body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and stores[statement.targets[0].id] == 1
        ):
            known[statement.targets[0].id] = _read_through(statement.value, known)
    return known


class _Inliner(ast.NodeTransformer):
    def __init__(self, known: dict[str, ast.expr]) -> None:
        self.known = known

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.known:
            return copy.deepcopy(self.known[node.id])
        return node


def _read_through(node: ast.expr, known: dict[str, ast.expr]) -> ast.expr:
    """``node`` with every known local replaced by its expression (a copy; ``node`` is left alone)."""
    if not known or not (_names_in(node) & known.keys()):
        return node
    return _Inliner(known).visit(copy.deepcopy(node))


def _targets(statement: ast.stmt) -> list[str]:
    """Local names assigned by an (aug)assignment, tuple targets flattened."""
    if isinstance(statement, ast.Assign):
        raw = statement.targets
    elif isinstance(statement, ast.AugAssign | ast.AnnAssign):
        raw = [statement.target]
    else:
        return []
    names: list[str] = []
    for target in raw:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            names.extend(elt.id for elt in target.elts if isinstance(elt, ast.Name))
    return names


def _pipeline_calls(value: ast.expr, allowed: Sequence[str]) -> list[str] | None:
    """The ``self.<attr>`` calls of a pure q/k pipeline expression, or None if it does anything else.

    A pipeline is names, reshape-only method calls and calls of ``self.<attr>`` for ``attr`` in
    ``allowed`` (the projection and the norms): ``self.q_norm(self.q_proj(x).view(s)).transpose(1, 2)``
    gives ``["q_norm", "q_proj"]``; ``q * self.scale`` gives None.
    """
    if isinstance(value, ast.Name):
        return []
    if not isinstance(value, ast.Call):
        return None
    attribute = _self_attribute(value.func)
    if attribute is not None:
        if attribute not in allowed or len(value.args) != 1:
            return None
        inner = _pipeline_calls(value.args[0], allowed)
        return None if inner is None else [attribute, *inner]
    if isinstance(value.func, ast.Attribute) and value.func.attr in _SHAPE_METHODS:
        return _pipeline_calls(value.func.value, allowed)
    return None


def _transposes(value: ast.expr) -> bool:
    """The expression calls ``.transpose(...)`` (the head split of a q/k pipeline)."""
    return any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "transpose"
        for sub in ast.walk(value)
    )


def _scales(value: ast.expr) -> bool:
    """The expression multiplies two locals (q by a factor computed in ``forward``, not a module constant)."""
    return any(
        isinstance(sub, ast.BinOp)
        and isinstance(sub.op, ast.Mult)
        and all(isinstance(side, ast.Name) for side in (sub.left, sub.right))
        for sub in ast.walk(value)
    )


def _is_cache_update(value: ast.expr) -> bool:
    return any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in _CACHE_METHODS
        for sub in ast.walk(value)
    )


def walk_statements(
    body: Sequence[ast.stmt], conditions: tuple[ast.expr, ...] = ()
) -> list[tuple[ast.stmt, tuple[ast.expr, ...]]]:
    """Flatten a function body into (simple statement, enclosing if-tests) in source order."""
    flat: list[tuple[ast.stmt, tuple[ast.expr, ...]]] = []
    for statement in body:
        if isinstance(statement, ast.If):
            flat += walk_statements(statement.body, (*conditions, statement.test))
            negated = ast.UnaryOp(op=ast.Not(), operand=statement.test)
            flat += walk_statements(statement.orelse, (*conditions, negated))
        elif isinstance(statement, ast.For | ast.While | ast.With | ast.Try):
            for block in ("body", "orelse", "finalbody"):
                flat += walk_statements(getattr(statement, block, []) or [], conditions)
            for handler in getattr(statement, "handlers", []) or []:
                flat += walk_statements(handler.body, conditions)
        else:
            flat.append((statement, conditions))
    return flat


def analyze_forward(
    attention_class: type,
    *,
    q_proj: str | None,
    k_proj: str | None,
    norm_attributes: Sequence[str] = (),
    qkv_proj: str | None = None,
) -> ForwardAnalysis:
    """Read ``attention_class.forward`` and report its q/k pipeline (see :class:`ForwardAnalysis`).

    Args:
        attention_class: the decoder's attention class.
        q_proj / k_proj: attribute names of the q and k projections (found from the module tree).
        norm_attributes: attribute names of norm submodules of the attention (q/k norm candidates).
        qkv_proj: attribute name of a fused q/k/v projection (then q and k are followed from its split).
    """
    module_name = attention_class.__module__
    analysis = ForwardAnalysis(attention_class.__name__, module_name)
    try:
        source = textwrap.dedent(inspect.getsource(attention_class.forward))
    except (OSError, TypeError):
        analysis.source_available = False
        return analysis
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
    reader = _ForwardReader(
        analysis,
        source,
        vars(sys.modules[module_name]) if module_name in sys.modules else {},
        {"query": q_proj, "key": k_proj},
        tuple(norm_attributes),
        qkv_proj,
    )
    analysis.references = {name for sub in ast.walk(function) if (name := _self_attribute(sub))}
    known = _known_locals(function)
    for statement, conditions in walk_statements(function.body):
        # The tests as written (for the evidence) and read through the known locals (for evaluating).
        resolved = tuple(_read_through(condition, known) for condition in conditions)
        reader.rotary_calls(statement, conditions, resolved)
        reader.kernel_call(statement)
        reader.qk_flow(statement, conditions, resolved)
    return analysis


@dataclass(frozen=True)
class _ForwardReader:
    """Records into ``analysis`` what each statement of ``forward`` does (one method per concern).

    Attributes:
        analysis: the result being filled in.
        source: ``forward``'s dedented source (for the source text of nodes).
        module_globals: the attention module's globals (what a called name resolves to).
        projections: ``query`` / ``key`` -> the projection attribute.
        norm_attributes: the attention's norm children.
        qkv_projection: the fused q/k/v projection attribute, if any.
        slices: local -> the q / k variable it is a slice of (partial rotary cuts q and k in two).
    """

    analysis: ForwardAnalysis
    source: str
    module_globals: dict[str, Any]
    projections: dict[str, str | None]
    norm_attributes: tuple[str, ...]
    qkv_projection: str | None = None
    slices: dict[str, str] = field(default_factory=dict)

    def text(self, node: ast.AST) -> str:
        return (ast.get_source_segment(self.source, node) or ast.unparse(node)).strip()

    def rotary_calls(
        self, statement: ast.stmt, conditions: tuple[ast.expr, ...], resolved: tuple[ast.expr, ...]
    ) -> None:
        """Calls of a ``*rotary*`` / ``*rope*`` function (also inside expressions such as tuple unpacking)."""
        analysis = self.analysis
        for sub in ast.walk(statement):
            if not (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)):
                continue
            name = sub.func.id
            target = self.module_globals.get(name)
            if not (callable(target) and ("rotary" in name.lower() or "rope" in name.lower())):
                continue
            analysis.rotary_calls.append(
                RotaryCall(
                    name=name,
                    function=target,
                    dotted_path=f"{analysis.module}.{name}",
                    defined_in=getattr(target, "__module__", analysis.module) or analysis.module,
                    source=self.text(sub),
                    conditions=tuple(self.text(c) for c in conditions),
                    condition_nodes=resolved,
                    positional_args=len(sub.args),
                    keywords=tuple(k.arg for k in sub.keywords if k.arg),
                    line=statement.lineno,
                    variables=tuple(
                        a.id for a in (*sub.args, *(k.value for k in sub.keywords)) if isinstance(a, ast.Name)
                    ),
                )
            )
            if analysis.rotary_line is None:
                analysis.rotary_line = statement.lineno

    def kernel_call(self, statement: ast.stmt) -> None:
        """The attention-kernel call: ``scaling=self.X`` and the other keywords it receives."""
        for sub in ast.walk(statement):
            if isinstance(sub, ast.Call):
                keywords = {k.arg: k for k in sub.keywords if k.arg}
                if "scaling" in keywords:
                    self.analysis.scaling_attribute = _self_attribute(keywords["scaling"].value)
                    self.analysis.kernel_keywords = {name: self.text(k.value) for name, k in keywords.items()}

    def qk_flow(
        self, statement: ast.stmt, conditions: tuple[ast.expr, ...], resolved: tuple[ast.expr, ...]
    ) -> None:
        """The q / k data flow: projection, reshapes and norms are the recipe; anything else is not."""
        targets = _targets(statement)
        value = getattr(statement, "value", None)
        if not targets or value is None or self._fused_split(targets, value) or self._sliced(targets, value):
            return
        pipeline = self._pipeline_of(targets, value)
        if pipeline is None:
            return
        variable, allowed = pipeline
        if (
            variable == self.analysis.query_var
            and self.analysis.transpose_line is None
            and _transposes(value)
        ):
            self.analysis.transpose_line = statement.lineno
        calls = _pipeline_calls(value, allowed) if isinstance(statement, ast.Assign) else None
        if calls is None:
            if variable == self.analysis.query_var and self.analysis.query_scale is None and _scales(value):
                condition_text = tuple(self.text(c) for c in conditions)
                self.analysis.query_scale = (self.text(statement), condition_text, conditions)
            self.analysis.unrecognized.append(self.text(statement))
            self.analysis.unrecognized_conditions.append(resolved)
            return
        condition_text = tuple(self.text(c) for c in conditions)
        self.analysis.norm_calls += [
            NormCall(call, variable, statement.lineno, condition_text, resolved)
            for call in calls
            if call in self.norm_attributes
        ]

    def _fused_split(self, targets: list[str], value: ast.expr) -> bool:
        """Whether the statement is the fused q/k/v projection or its split (q, k are then named).

        The projection's output variable is remembered; a statement reading it unpacks q, k (, v) in that
        order (``q, k, v = self._split_heads(qkv)``, ``qkv.chunk(3, -1)``) or slices one of them
        (``q = qkv[..., :n]``; the first slice is q, the second k). Which layout the split has is measured by
        research, not read here.
        """
        analysis = self.analysis
        if self.qkv_projection is None:
            return False
        if analysis.qkv_var is None and _calls_self_attribute(value, self.qkv_projection):
            analysis.qkv_var = targets[0]
            return True
        if analysis.qkv_var is None or analysis.qkv_var not in _names_in(value) or analysis.key_var:
            return False
        if len(targets) >= 2:
            analysis.query_var, analysis.key_var = targets[0], targets[1]
        elif analysis.query_var is None:
            analysis.query_var = targets[0]
        else:
            analysis.key_var = targets[0]
        return True

    def _sliced(self, targets: list[str], value: ast.expr) -> bool:
        """Whether the statement only slices q or k into new locals (``q_rot, q_pass = q[..., :r], q[...
        r:]``, partial rotary); the slices are remembered so that their re-assembly is recognised."""
        variables = {v for v in (self.analysis.query_var, self.analysis.key_var) if v}
        parts = value.elts if isinstance(value, ast.Tuple) else [value]
        sources = {
            part.value.id
            for part in parts
            if isinstance(part, ast.Subscript) and isinstance(part.value, ast.Name)
        }
        if not (
            variables
            and len(parts) == len(targets)
            and all(isinstance(part, ast.Subscript) for part in parts)
            and len(sources) == 1
            and sources <= variables
            and not set(targets) & variables
        ):
            return False
        self.slices.update(dict.fromkeys(targets, next(iter(sources))))
        return True

    def _reassembled(self, variable: str, value: ast.expr) -> bool:
        """``variable = torch.cat((rotated, passed), dim=-1)`` of its own slices: partial rotary, which the
        adapter reproduces (the first ``cos``-width dims rotate, the rest pass)."""
        if not (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "cat"
            and value.args
            and isinstance(value.args[0], ast.Tuple | ast.List)
        ):
            return False
        names = value.args[0].elts
        return bool(names) and all(
            isinstance(name, ast.Name) and self.slices.get(name.id) == variable for name in names
        )

    def _pipeline_of(self, targets: list[str], value: ast.expr) -> tuple[str, tuple[str, ...]] | None:
        """(q/k variable written, self-calls allowed in it) for a statement of the q / k pipeline.

        A statement calling the q / k projection starts a pipeline (and names its variable); a later write
        to that variable continues it, except the rotary call itself (recorded separately) and the kv-cache
        update. None: not part of the pipeline.
        """
        analysis = self.analysis
        started = None
        for role, projection in self.projections.items():
            if (
                projection
                and _calls_self_attribute(value, projection)
                and getattr(analysis, f"{role}_var") is None
            ):
                setattr(analysis, f"{role}_var", targets[0])
                started = (targets[0], (projection, *self.norm_attributes))
        if started is not None:
            return started
        written = {v for v in (analysis.query_var, analysis.key_var) if v} & set(targets)
        if not written:
            return None
        if any(call.source in self.text(value) for call in analysis.rotary_calls) or _is_cache_update(value):
            return None
        variable = next(iter(written))
        if self._reassembled(variable, value):
            return None
        return variable, self.norm_attributes


def evaluate_condition(condition: ast.expr, instance: Any) -> bool | None:
    """Evaluate an ``if`` test that reads only ``self`` on ``instance``; None when it needs runtime values.

    ``self.use_rope`` or ``hasattr(self, "qk_norm")`` can be answered from the built module; a test on
    ``position_embeddings`` or ``kwargs`` cannot, and returns None.
    """
    names = _names_in(condition) - {"self", *_CONDITION_BUILTINS}
    if names:
        return None
    expression = ast.Expression(body=condition)
    ast.fix_missing_locations(expression)
    try:
        code = compile(expression, "<attention condition>", "eval")
        return bool(eval(code, {"__builtins__": dict(_CONDITION_BUILTINS)}, {"self": instance}))
    except Exception:  # an attribute missing on this layer and the like: not decidable statically
        return None


def gated_mlp_roles(mlp_class: type, candidates: Sequence[str]) -> tuple[str | None, str | None, str]:
    """(gate, up, evidence) for a gated MLP whose projections have unconventional names (``w1`` / ``w3``).

    In ``down(act(gate(x)) * up(x))`` the gate is the projection whose output goes through another call
    (the activation) and the up projection is the one multiplied directly.
    """
    try:
        source = textwrap.dedent(inspect.getsource(mlp_class.forward))
    except (OSError, TypeError):
        return None, None, f"no source for {mlp_class.__name__}.forward"
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    wrapped: set[str] = set()
    multiplied: set[str] = set()
    for node in ast.walk(tree):
        name = _self_attribute(node.func) if isinstance(node, ast.Call) else None
        if name not in candidates:
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Call) and _self_attribute(parent.func) not in candidates:
            wrapped.add(name)
        elif isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Mult):
            multiplied.add(name)
    gates, ups = wrapped - multiplied, multiplied - wrapped
    if len(gates) == 1 and len(ups) == 1:
        gate, up = next(iter(gates)), next(iter(ups))
        return gate, up, f"{mlp_class.__name__}.forward multiplies act(self.{gate}(x)) by self.{up}(x)"
    return None, None, f"{mlp_class.__name__}.forward does not show which of {sorted(candidates)} is the gate"
