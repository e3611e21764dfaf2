"""What a decoder block holds: the attention and MLP children, head geometry and sliding windows.

The attention's own recipe (:mod:`.attention`, :mod:`.projections`) and the MLP's projections
(:mod:`.mlp`) are researched on the children picked here.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.attention import research_attention
from vlmforge.scaffold.research.config_values import PER_LAYER, config_value
from vlmforge.scaffold.research.geometry import HeadGeometry
from vlmforge.scaffold.research.mlp import research_mlp
from vlmforge.scaffold.research.module_tree import (
    Decoder,
    attention_child,
    describe,
    find_projection,
    mlp_child,
    second_sequence,
)
from vlmforge.scaffold.research.norms import research_norms

__all__ = ["research_blocks"]

# Config values the adapter reads once for every layer; heterogeneous configs break that.
_GLOBAL_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")


@dataclass(frozen=True)
class _Child:
    """A block child picked across the layers (``self_attn``, ``mlp``).

    Attributes:
        name: the attribute picked (None: no layer has one).
        names: how many layers have each candidate name (None counts layers with none).
        index: the first layer that has ``name``.
        module: that layer's child.
    """

    name: str | None
    names: Counter[str | None]
    index: int
    module: nn.Module | None


@dataclass(frozen=True)
class _Windows:
    """The text config's attention windows and layer types, and each layer's ``sliding_window``."""

    window: Any
    layer_types: Counter[str]
    per_layer: Counter[Any]

    @property
    def unsupported(self) -> list[str]:
        """Layer types that are not softmax attention (linear attention, state-space mixers...)."""
        return sorted(t for t in self.layer_types if t not in _SOFTMAX_LAYER_TYPES)


# Softmax-attention layer types. The recomputation takes the mask the decoder hands each layer (a chunked
# layer gets transformers' chunked causal mask, Llama4), so a layer type that only changes the mask is
# supported as long as it is not given a sliding window of its own.
_SOFTMAX_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


def research_blocks(decoder: Decoder, text_config: PretrainedConfig, report: ResearchReport) -> None:
    """Attention / MLP attribute names, block norms, projections, rotary, q/k norms, scaling, GQA, windows."""
    layers = list(decoder.layers)
    cross = _cross_attention(layers)
    attention = _attention(layers, exclude=cross.name)
    report.add(_attention_answer(attention, cross))
    report.add(_cross_attention_answer(cross))
    report.add(_hybrid_answer(attention, layers, cross))
    mlp = _mlp(layers)
    report.add(_mlp_answer(mlp))
    research_norms(decoder, attention.name, mlp.name, report)
    geometry = HeadGeometry.of(text_config)
    per_layer = [key for key in _GLOBAL_KEYS if config_value(text_config, key) is PER_LAYER]
    if per_layer:
        report.add(_per_layer_answer(text_config, per_layer))
    if attention.module is not None and attention.name is not None:
        research_attention(attention.module, layers, attention.name, geometry, text_config, report)
    if mlp.module is not None and mlp.name is not None:
        # Every layer's MLP: dense-first MoE stacks and fused projections are told apart per layer.
        research_mlp(
            [getattr(layer, mlp.name) for layer in layers if hasattr(layer, mlp.name)],
            geometry.hidden,
            report,
        )
    report.add(_gqa_answer(geometry, attention.module))
    report.add(_head_dim_answer(geometry, attention.module))
    hybrid = attention.name is not None and bool(_other_mixers(attention, cross))
    report.add(_sliding_window_answer(_windows(layers, attention.name, text_config), hybrid))


# ------------------------------------------------------------------------------------------- reasoning
def _cross_attention(layers: list[nn.Module]) -> _Child:
    """The token-mixing child that attends to another sequence (the image features) instead of the tokens.

    A child with a query projection whose forward takes a second sequence's states is a cross-attention;
    it is the layer's mixer only where the layer has no other (Llama 3.2 Vision's cross-attention layers
    replace self-attention with it), so the image reaches the decoder through those layers.
    """
    names = Counter(attention_child(layer) for layer in layers)
    cross = [
        n
        for n in names
        if n
        and all(
            find_projection(dict(getattr(layer, n).named_children()), "q_proj")
            and second_sequence(getattr(layer, n))
            for layer in layers
            if hasattr(layer, n)
        )
    ]
    # The most common cross-attention child; only meaningful next to a self-attention child elsewhere.
    name = max(cross, key=lambda n: names[n]) if cross and len(names) > 1 else None
    first = next((layer for layer in layers if name and hasattr(layer, name)), layers[0])
    return _Child(name, names, layers.index(first), getattr(first, name) if name else None)


def _other_mixers(attention: _Child, cross: _Child) -> dict[str | None, int]:
    """Layer counts of the token mixers other than the softmax attention and the cross-attention."""
    return {n: count for n, count in attention.names.items() if n not in (attention.name, cross.name)}


def _attention(layers: list[nn.Module], exclude: str | None = None) -> _Child:
    """The attention child; in a hybrid decoder the softmax one (the one with a query projection).

    Attention patterns and the score recomputation are about softmax attention, so a linear-attention
    or state-space mixer sharing the decoder does not get picked even where it is the majority; neither
    does a cross-attention child (``exclude``), whose pattern is over the image features, not the tokens.
    """
    names = Counter(attention_child(layer) for layer in layers)
    softmax = [
        n
        for n in names
        if n
        and n != exclude
        and any(
            find_projection(dict(getattr(layer, n).named_children()), "q_proj")
            for layer in layers
            if hasattr(layer, n)
        )
    ]
    name = max(softmax or [n for n in names if n != exclude] or list(names), key=lambda n: names[n])
    first = next((layer for layer in layers if name and hasattr(layer, name)), layers[0])
    return _Child(name, names, layers.index(first), getattr(first, name) if name else None)


def _mlp(layers: list[nn.Module]) -> _Child:
    """The most common MLP child name, and layer 0's child of that name."""
    names = Counter(mlp_child(layer) for layer in layers)
    name = names.most_common(1)[0][0]
    return _Child(name, names, 0, getattr(layers[0], name) if name else None)


def _windows(layers: list[nn.Module], attention_name: str | None, text_config: PretrainedConfig) -> _Windows:
    return _Windows(
        window=config_value(text_config, "sliding_window"),
        layer_types=Counter(config_value(text_config, "layer_types") or []),
        per_layer=Counter(
            getattr(getattr(layer, attention_name, None), "sliding_window", None) if attention_name else None
            for layer in layers
        ),
    )


# -------------------------------------------------------------------------------------------- answers
def _attention_answer(attention: _Child, cross: _Child) -> Answer:
    uniform = not _other_mixers(attention, cross) and attention.name is not None
    attn = attention.module
    evidence = (
        f"layers[{attention.index}].{attention.name} is {type(attn).__module__}.{type(attn).__name__}"
        if attn is not None
        else "unknown: no attention child in the decoder layers"
    )
    if not uniform and attention.name is not None:
        # A hybrid decoder: the other layers mix tokens otherwise (linear attention, convolution); the
        # spec's `attention.hybrid` gives attention hooks to the layers that have this module only.
        others = _other_mixers(attention, cross)
        evidence += (
            f" on {attention.names[attention.name]} of {attention.names.total()} layers; the others have "
            f"{others} instead (hybrid decoder: attention hooks on the softmax-attention layers only)"
        )
    return Answer(
        "attention",
        "Attention module attribute (and class)",
        attention.name,
        evidence,
        "found" if attention.name is not None else "unknown",
        slot="attention",
    )


def _conditional_attention(layer_class: type, name: str) -> bool:
    """Whether ``layer_class.__init__`` creates ``self.<name>`` only under a condition (a hybrid-capable
    decoder layer: this config may give every layer attention, a checkpoint's config may not)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(layer_class.__init__)))
    except (OSError, TypeError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign) and any(
                    isinstance(t, ast.Attribute) and t.attr == name for t in sub.targets
                ):
                    return True
    return False


def _cross_attention_answer(cross: _Child) -> Answer:
    if cross.name is None:
        evidence = "no layer's token mixer takes a second sequence's states (no cross-attention layers)"
    else:
        module = cross.module
        evidence = (
            f"layers[{cross.index}].{cross.name} is {type(module).__module__}.{type(module).__name__}, whose "
            f"forward takes {second_sequence(module)} to attend to; {cross.names[cross.name]} of "
            f"{cross.names.total()} layers have it in place of self-attention: the image reaches the decoder "
            "through them (no attention hooks there; image-token checks on input embeddings not applicable)"
        )
    return Answer(
        "cross_attention", "Cross-attention module attribute (image-attending layers)", cross.name, evidence
    )


def _hybrid_answer(attention: _Child, layers: list[nn.Module], cross: _Child) -> Answer:
    # Cross-attention layers are declared by `modules.cross_attention`: they do not make a decoder hybrid.
    mixed = attention.name is not None and bool(_other_mixers(attention, cross))
    conditional = attention.name is not None and _conditional_attention(type(layers[0]), attention.name)
    evidence = f"attention child per layer: {dict(attention.names)}"
    if conditional:
        evidence += (
            f"; {type(layers[0]).__name__}.__init__ creates self.{attention.name} only under a condition "
            "(per layer type), so checkpoints of this class may mix in layers without it"
        )
    return Answer(
        "hybrid", "Some layers have no softmax attention (hybrid decoder)", mixed or conditional, evidence
    )


def _mlp_answer(mlp: _Child) -> Answer:
    return Answer(
        "mlp",
        "MLP module attribute",
        mlp.name,
        f"layers[0].{mlp.name} is {describe(mlp.module)}"
        if mlp.module is not None
        else "unknown: no MLP child in layers[0]",
        "found" if mlp.module is not None and len(mlp.names) == 1 else "unknown",
    )


def _per_layer_answer(text_config: PretrainedConfig, per_layer: list[str]) -> Answer:
    return Answer(
        "per_layer_config",
        "Config values that differ per layer",
        per_layer,
        f"{type(text_config).__name__} is heterogeneous: {per_layer} differ per layer, but the adapter "
        "reads one global value for head counts / head_dim",
        "hand_edit",
        slot="layers",
    )


def _gqa_answer(geometry: HeadGeometry, attn: nn.Module | None) -> Answer:
    """Head counts the adapter derives from the config (lm_num_kv_heads), next to the module's groups."""
    groups = getattr(attn, "num_key_value_groups", None)
    return Answer(
        "gqa",
        "Grouped-query attention",
        f"{geometry.heads} heads / {geometry.kv_heads} kv heads",
        f"text config num_attention_heads={geometry.heads}, num_key_value_heads={geometry.kv_heads}; "
        f"{type(attn).__name__}.num_key_value_groups = {groups}",
    )


def _head_dim_answer(geometry: HeadGeometry, attn: nn.Module | None) -> Answer:
    """The head dim the adapter derives from the config (lm_head_dim), checked against the module's."""
    hidden, heads, explicit = geometry.hidden, geometry.heads, geometry.explicit_head_dim
    attn_head_dim = getattr(attn, "head_dim", None)
    consistent = attn_head_dim is None or attn_head_dim == geometry.head_dim
    evidence = (
        f"text config head_dim = {explicit} (explicit; hidden/heads = {hidden // heads})"
        if explicit and hidden and heads
        else f"hidden_size / num_attention_heads = {hidden} / {heads}"
    )
    evidence += (
        f"; attention.head_dim = {attn_head_dim}"
        if consistent
        else f"; but attention.head_dim = {attn_head_dim}: the adapter's lm_head_dim would be wrong"
    )
    return Answer(
        "head_dim",
        "Head dim (explicit or hidden/heads)",
        geometry.head_dim,
        evidence,
        "found" if consistent else "hand_edit",
        slot="attention_recipe",
    )


def _sliding_window_answer(windows: _Windows, hybrid: bool) -> Answer:
    evidence = (
        f"text config sliding_window = {windows.window}; layer_types = {dict(windows.layer_types) or None}; "
        f"attention.sliding_window per layer: {dict(windows.per_layer)}"
    )
    unsupported = windows.unsupported
    if unsupported and hybrid:
        evidence += (
            f"; layer types {unsupported} are the layers without softmax attention (attention.hybrid: no "
            "attention hooks there); the others are masked with their module's sliding_window"
        )
        unsupported = []
    elif unsupported:
        evidence += (
            f"; layer types {unsupported} are not softmax attention: hooks/attention recomputation need care"
        )
    else:
        evidence += (
            " (the adapter masks each layer with the mask the decoder hands it"
            " and its module's sliding_window)"
        )
    return Answer(
        "sliding_window",
        "Sliding windows / layer types",
        dict(windows.layer_types) or windows.window,
        evidence,
        "hand_edit" if unsupported else "found",
        slot="layers",
    )
