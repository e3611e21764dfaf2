"""Which norm of a decoder block feeds its attention, and which feeds its MLP (``input_norm``, ``mlp_norm``).

Read off the block's ``forward`` source, not guessed from names: walking its statements in order, the
norm child called last before the attention call is the attention's input norm, and the norm called last
before the MLP call is the MLP's. A sandwich-norm block (a norm on the attention *output* as well) still
answers right: the norm called after the attention is followed by the pre-MLP norm.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections import Counter
from dataclasses import dataclass

from torch import nn

from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.forward_analysis import walk_statements
from vlmforge.scaffold.research.module_tree import Decoder, is_norm

__all__ = ["research_norms"]

_QUESTIONS = {
    "input_norm": "Norm producing the attention's input",
    "mlp_norm": "Norm producing the MLP's input",
}


@dataclass(frozen=True)
class _BlockNorms:
    """What one block class's ``forward`` calls before its attention and before its MLP.

    Attributes:
        block: the block class name.
        readable: ``forward``'s source could be read.
        before: role (``input_norm`` / ``mlp_norm``) -> the norm child called last before the
            attention / MLP call (None: no norm precedes it).
        calls: role -> whether the attention / MLP call was seen at all.
    """

    block: str
    readable: bool
    before: dict[str, str | None]
    calls: dict[str, bool]


def research_norms(decoder: Decoder, attention: str | None, mlp: str | None, report: ResearchReport) -> None:
    """``input_norm`` and ``mlp_norm`` answers, true for every layer or reported per class."""
    findings = [_block_norms(layer, attention, mlp) for layer in decoder.layers]
    # The attention's input norm only matters where the layer has that attention (a hybrid decoder's
    # cross- or linear-attention layers have no attention hooks).
    with_attention = [
        finding
        for layer, finding in zip(decoder.layers, findings)
        if attention is None or hasattr(layer, attention)
    ]
    for role, question in _QUESTIONS.items():
        subset = with_attention if role == "input_norm" else findings
        report.add(_answer(role, question, subset, len(subset)))


# ------------------------------------------------------------------------------------------- reasoning
def _called_child(statement: ast.stmt) -> list[str]:
    """``self.<child>(...)`` calls in a statement, nested calls innermost first (as Python evaluates them)."""
    calls = [
        node.func.attr
        for node in ast.walk(statement)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    ]
    return calls[::-1]


def _block_norms(layer: nn.Module, attention: str | None, mlp: str | None) -> _BlockNorms:
    block = type(layer).__name__
    targets = {"input_norm": attention, "mlp_norm": mlp}
    before: dict[str, str | None] = dict.fromkeys(targets)
    calls = dict.fromkeys(targets, False)
    try:
        source = textwrap.dedent(inspect.getsource(type(layer).forward))
    except (OSError, TypeError):
        return _BlockNorms(block, False, before, calls)
    norms = {name for name, child in layer.named_children() if is_norm(child)}
    last_norm: str | None = None
    function = ast.parse(source).body[0]
    for statement, _conditions in walk_statements(getattr(function, "body", [])):
        for child in _called_child(statement):
            if child in norms:
                last_norm = child
            for role, target in targets.items():
                if child == target and not calls[role]:
                    before[role], calls[role] = last_norm, True
                    last_norm = None
    return _BlockNorms(block, True, before, calls)


# -------------------------------------------------------------------------------------------- evidence
def _answer(role: str, question: str, findings: list[_BlockNorms], layers: int) -> Answer:
    readable = [f for f in findings if f.readable and f.calls[role]]
    if len(readable) < len(findings):
        unread = sorted({f.block for f in findings if f not in readable})
        return Answer(
            role,
            question,
            None,
            f"unknown: the forward of {', '.join(unread)} could not be read or never calls the "
            f"{'attention' if role == 'input_norm' else 'MLP'} child",
            "unknown",
        )
    values = Counter(f.before[role] for f in readable)
    if len(values) > 1:
        listing = ", ".join(f"{value or 'no norm'} ({count} layers)" for value, count in values.items())
        return Answer(role, question, None, f"differs between layers: {listing}", "hand_edit")
    [value] = values
    blocks = ", ".join(sorted({f.block for f in readable}))
    target = "attention" if role == "input_norm" else "MLP"
    evidence = (
        f"{blocks}.forward calls self.{value} last before the {target} (all {layers} layers)"
        if value
        else f"{blocks}.forward calls no norm before the {target} (all {layers} layers)"
    )
    return Answer(role, question, value, evidence)
