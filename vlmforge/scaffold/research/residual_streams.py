"""Parallel residual streams: whether the decoder layers pass one [B, L, D] stream or a stack of them.

AltUp (Gemma3n) carries ``N`` parallel residual streams between the decoder layers, stacked on a leading
axis (``[N, B, L, D]``); each layer computes from one *active* stream's prediction and corrects all of them.
The residual hooks then show the active stream (``spec.active_stream``). Whether the layers pass a stack is
*measured*: the tiny model runs the image probe and its first decoder layer's input shape is read. Which
stream is active is read off the decoder layer's ``forward``, which indexes the stack with a text-config
attribute (``predictions[self.config.altup_active_idx]``), and checked against the measured stream count.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import torch

from vlmforge.harness.probes import single_probe
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["research_residual_streams"]

_QUESTION = "Parallel residual streams: text-config attribute of the stream the residual hooks show"


def research_residual_streams(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Answer ``active_stream``: None for one [B, L, D] stream, else the config attribute of the active
    one."""
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        report.add(Answer("active_stream", _QUESTION, None, unmeasured, "unknown", slot="active_stream"))
        return
    try:
        vlm = research_vlm(report, tiny, name, {"active_stream": None})
        inputs = single_probe(vlm)
        layer = vlm.adapter.lm_layers[0]
        states = _first_layer_input(vlm, layer, inputs)
    except Exception as error:  # the measurement itself failed: an honest unknown, with the reason
        evidence = (
            "unknown: the tiny model's first decoder layer could not be measured "
            f"({type(error).__name__}: {error})"
        )
        report.add(Answer("active_stream", _QUESTION, None, evidence, "unknown", slot="active_stream"))
        return
    batch, length = inputs["input_ids"].shape
    hidden = vlm.adapter.lm_hidden_dim
    shape = tuple(states.shape)
    if shape == (batch, length, hidden):
        evidence = f"tiny model: decoder layer 0 receives one [B, L, D] residual stream {list(shape)}"
        report.add(Answer("active_stream", _QUESTION, None, evidence, "measured"))
        return
    if states.dim() != 4 or shape[1:] != (batch, length, hidden):
        evidence = (
            f"tiny model: decoder layer 0 receives {list(shape)}, neither one [B, L, D] = "
            f"{[batch, length, hidden]} stream nor a stack of them"
        )
        report.add(Answer("active_stream", _QUESTION, None, evidence, "hand_edit", slot="active_stream"))
        return
    count = shape[0]
    config = vlm.adapter.lm_config
    indexes = _config_indexes(type(layer))
    fitting = [a for a in indexes if isinstance(v := getattr(config, a, None), int) and 0 <= v < count]
    evidence = (
        f"tiny model: decoder layer 0 receives {list(shape)}, {count} stacked [B, L, D] residual streams; "
        f"{type(layer).__name__}.forward indexes them with "
        f"{', '.join(f'self.config.{a}' for a in indexes) or 'no config attribute'}"
    )
    if len(fitting) != 1:
        evidence += f": {len(fitting)} of them hold a stream index below {count}"
        report.add(Answer("active_stream", _QUESTION, None, evidence, "hand_edit", slot="active_stream"))
        return
    evidence += f" (= {getattr(config, fitting[0])}): the hooks show that stream"
    report.add(Answer("active_stream", _QUESTION, fitting[0], evidence, "measured"))


def _first_layer_input(vlm: Any, layer: torch.nn.Module, inputs: Any) -> torch.Tensor:
    """The hidden states decoder layer ``layer`` receives on ``inputs`` (plain torch hook, first call)."""
    seen: list[torch.Tensor] = []

    def keep(_module: Any, args: tuple, kwargs: dict) -> None:
        if not seen:
            seen.append(args[0] if args else kwargs["hidden_states"])

    handle = layer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with quiet(), torch.no_grad():
            vlm.forward(inputs)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("decoder layer 0 was not called")
    return seen[0]


def _config_indexes(layer_class: type) -> list[str]:
    """``x`` of every ``<tensor>[self.config.x]`` subscript in ``layer_class.forward``, in source order."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(layer_class.forward)))
    except (OSError, TypeError, SyntaxError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        index = node.slice if isinstance(node, ast.Subscript) else None
        if (
            isinstance(index, ast.Attribute)
            and isinstance(index.value, ast.Attribute)
            and index.value.attr == "config"
            and isinstance(index.value.value, ast.Name)
            and index.value.value.id == "self"
            and index.attr not in found
        ):
            found.append(index.attr)
    return found
