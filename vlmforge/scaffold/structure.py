"""Structure research on the meta-device model: decoder path, norms, attention recipe, MLP names.

Everything here reads the module tree (names, classes, Linear shapes) and the source of the classes
transformers runs; nothing executes a forward pass, so it works for any model size.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from vlmforge.core.spec import ModulePaths
from vlmforge.scaffold.forward_analysis import (
    ForwardAnalysis,
    analyze_forward,
    evaluate_condition,
    gated_mlp_roles,
)
from vlmforge.scaffold.report import Answer, ResearchReport, Status

__all__ = ["PER_LAYER", "as_int", "config_value", "research_structure"]

_ATTENTION_NAMES = ("self_attn", "self_attention", "attention", "attn")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "mlp_block")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_norm", "ln_f", "norm_f")
# Role -> accepted attribute names of the attention projections (transformers' naming conventions).
_PROJECTION_NAMES = {
    "q_proj": ("q_proj", "query", "q", "wq", "q_lin"),
    "k_proj": ("k_proj", "key", "k", "wk", "k_lin"),
    "v_proj": ("v_proj", "value", "v", "wv", "v_lin"),
    "o_proj": ("o_proj", "out_proj", "o", "wo", "dense", "out_lin", "c_proj"),
}
_FUSED_QKV = re.compile(r"^(qkv|qkv_proj|query_key_value|c_attn|wqkv|in_proj)$", re.IGNORECASE)


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


def _module_paths(root: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in root.named_modules()}


def _describe(module: nn.Module) -> str:
    return type(module).__name__


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
    )


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


def _attention_child(layer: nn.Module) -> str | None:
    """The token-mixing child of a block: conventional names, else an ``*attn*`` / ``*Attention*`` child."""
    return _named_child(
        layer,
        _ATTENTION_NAMES,
        lambda n, c: (
            not _is_norm(c)
            and ("attention" in type(c).__name__.lower() or "attn" in n.lower() or "attention" in n.lower())
        ),
    )


def _mlp_child(layer: nn.Module) -> str | None:
    """The channel-mixing child of a block: conventional names, else a ``*MLP*`` / ``*MoE*`` child."""
    tags = ("mlp", "feedforward", "moe", "experts")
    return _named_child(layer, _MLP_NAMES, lambda n, c: any(tag in type(c).__name__.lower() for tag in tags))


@dataclass(frozen=True)
class _Decoder:
    path: str
    module: nn.Module
    layers_attr: str
    layers: nn.ModuleList


def _block_lists(root: nn.Module, prefix: str = "") -> list[_Decoder]:
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
                found.append(_Decoder(full, module, child_name, child))
    return found


def _final_norm(decoder: _Decoder) -> tuple[str | None, str]:
    """The norm the decoder applies after its layer loop, read from ``forward``; else by name."""
    cls = type(decoder.module)
    norms = {n: c for n, c in decoder.module.named_children() if _is_norm(c)}
    with contextlib.suppress(OSError, TypeError, SyntaxError):
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
        loops = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.For)
            and any(
                isinstance(sub, ast.Attribute) and sub.attr == decoder.layers_attr
                for sub in ast.walk(node.iter)
            )
        ]
        if loops:
            end = max(getattr(loop, "end_lineno", loop.lineno) or loop.lineno for loop in loops)
            after = [
                node.func.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and node.func.attr in norms
                and node.lineno > end
            ]
            if len(set(after)) == 1:
                return after[
                    0
                ], f"{cls.__name__}.forward applies self.{after[0]} ({_describe(norms[after[0]])}) "
            return None, (
                f"unknown: {cls.__name__}.forward applies {sorted(set(after)) or 'no norm'} after its loop "
                "over "
                f"self.{decoder.layers_attr} (norm children: {sorted(norms) or 'none'})"
            )
    final = next((n for n in _FINAL_NORM_NAMES if n in norms), None)
    if final is None:
        return (
            None,
            f"unknown: no source for {cls.__name__}.forward and norm children {sorted(norms) or 'none'}",
        )
    return (
        final,
        f"{cls.__name__}.{final} is a {_describe(norms[final])} (by name; forward source unavailable)",
    )


# ------------------------------------------------------------------------------------- structure research
def _research_structure(
    model: nn.Module, config: PretrainedConfig, report: ResearchReport
) -> _Decoder | None:
    """language_model, layers, final norm, lm_head, decoder architecture."""
    text_config = config.get_text_config(decoder=True)
    expected = config_value(text_config, "num_hidden_layers")
    paths = _module_paths(model)
    by_api = None
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        with contextlib.suppress(Exception):
            by_api = get_decoder()
    everything = _block_lists(model)
    listing = ", ".join(f"{c.path or '<root>'}.{c.layers_attr} ({len(c.layers)})" for c in everything)
    # Narrow down: inside what get_decoder() returns (it may be a *ForCausalLM wrapping the decoder), then
    # owned by the module whose .config is the text config, then the layer count of the text config.
    chosen: list[_Decoder] = []
    how = ""
    if isinstance(by_api, nn.Module) and id(by_api) in paths:
        chosen = _block_lists(by_api, paths[id(by_api)])
        how = f"it is the block list inside model.get_decoder() (model.{paths[id(by_api)]})"
    if len(chosen) != 1:
        chosen = [c for c in everything if getattr(c.module, "config", None) is text_config]
        how = "its owner's .config is the text config"
    if len(chosen) != 1:
        chosen = [
            c for c in everything if len(c.layers) == expected and any(map(_is_norm, c.module.children()))
        ]
        how = f"its length matches text_config.num_hidden_layers = {expected} and its owner has a norm"
    if len(chosen) != 1:
        report.add(
            Answer(
                "language_model",
                "Dotted path to the decoder that owns .layers",
                None,
                f"unknown: {len(chosen)} block lists qualify as the text decoder's among "
                f"[{listing or 'none'}]",
                "unknown",
            )
        )
        return None
    decoder = chosen[0]
    layer_classes = Counter(type(layer).__name__ for layer in decoder.layers)
    layer_desc = ", ".join(f"{n} {cls}" for cls, n in layer_classes.items())
    report.add(
        Answer(
            "language_model",
            "Dotted path to the decoder that owns .layers",
            decoder.path,
            f"model.{decoder.path}.{decoder.layers_attr} is a ModuleList of {layer_desc}; "
            f"chosen because {how} "
            f"(block lists found: {listing})",
        )
    )
    uniform = len(layer_classes) == 1
    report.add(
        Answer(
            "layers",
            "Decoder layer list attribute",
            decoder.layers_attr,
            f"{type(decoder.module).__name__}.{decoder.layers_attr}"
            + (
                ""
                if uniform
                else f"; layers are not uniform ({layer_desc}): per-layer hooks need a hand check"
            ),
            "found" if uniform else "hand_edit",
        )
    )
    final, evidence = _final_norm(decoder)
    report.add(Answer("final_norm", "Final norm attribute", final, evidence, "found" if final else "unknown"))
    # lm_head: the output embeddings, located by identity in the module tree.
    head = None
    get_output = getattr(model, "get_output_embeddings", None)
    if callable(get_output):
        with contextlib.suppress(Exception):
            head = get_output()
    head_path = _module_paths(model).get(id(head)) if head is not None else None
    report.add(
        Answer(
            "lm_head",
            "Unembedding (lm_head) path",
            head_path,
            f"model.get_output_embeddings() is model.{head_path} ({_describe(head)})"
            if head_path
            else "unknown: model.get_output_embeddings() returned nothing in the module tree",
            "found" if head_path else "unknown",
        )
    )
    text_type = config_value(text_config, "model_type", "?")
    report.add(
        Answer(
            "decoder_architecture",
            "LLM architecture the decoder is based on",
            f"{type(decoder.module).__name__} ({text_type})",
            f"decoder class {type(decoder.module).__module__}.{type(decoder.module).__name__}; "
            f"text config {type(text_config).__name__} (model_type {text_type!r})",
        )
    )
    return decoder


def _research_blocks(decoder: _Decoder, text_config: PretrainedConfig, report: ResearchReport) -> None:
    """Attention / MLP attribute names, projections, rotary, norms, scaling, GQA, head_dim, windows."""
    layers = list(decoder.layers)
    attention_names = Counter(_attention_child(layer) for layer in layers)
    # In a hybrid decoder analyse the softmax attention (the one with a query projection): it is what
    # attention patterns and the score recomputation are about.
    softmax = [
        n
        for n in attention_names
        if n
        and any(
            _find_projection(dict(getattr(layer, n).named_children()), "q_proj")
            for layer in layers
            if hasattr(layer, n)
        )
    ]
    attention_name = max(softmax or list(attention_names), key=lambda n: attention_names[n])
    uniform = len(attention_names) == 1 and attention_name is not None
    first = next((layer for layer in layers if attention_name and hasattr(layer, attention_name)), layers[0])
    attn = getattr(first, attention_name) if attention_name else None
    report.add(
        Answer(
            "attention",
            "Attention module attribute (and class)",
            attention_name,
            (
                f"layers[{layers.index(first)}].{attention_name} is "
                f"{type(attn).__module__}.{type(attn).__name__}"
                if attn is not None
                else "unknown: no attention child in the decoder layers"
            )
            + ("" if uniform else f"; differs across layers: {dict(attention_names)} (hybrid decoder)"),
            "found" if uniform else ("hand_edit" if attention_name else "unknown"),
            slot="attention",
        )
    )
    mlp_names = Counter(_mlp_child(layer) for layer in layers)
    mlp_name = mlp_names.most_common(1)[0][0]
    mlp = getattr(layers[0], mlp_name) if mlp_name else None
    report.add(
        Answer(
            "mlp",
            "MLP module attribute",
            mlp_name,
            f"layers[0].{mlp_name} is {_describe(mlp)}"
            if mlp is not None
            else "unknown: no MLP child in layers[0]",
            "found" if mlp is not None and len(mlp_names) == 1 else "unknown",
        )
    )
    hidden = as_int(config_value(text_config, "hidden_size"))
    heads = as_int(config_value(text_config, "num_attention_heads"))
    kv_heads = as_int(config_value(text_config, "num_key_value_heads")) or heads
    raw_head_dim = config_value(text_config, "head_dim")
    explicit_head_dim = as_int(raw_head_dim)
    head_dim = explicit_head_dim or (hidden // heads if hidden and heads else None)
    per_layer = [
        key
        for key in (
            "hidden_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
        )
        if config_value(text_config, key) is PER_LAYER
    ]
    if per_layer:
        report.add(
            Answer(
                "per_layer_config",
                "Config values that differ per layer",
                per_layer,
                f"{type(text_config).__name__} is heterogeneous: {per_layer} differ per layer, but the "
                "adapter "
                "reads one global value for head counts / head_dim",
                "hand_edit",
                slot="layers",
            )
        )
    if attn is not None:
        _research_attention(attn, layers, attention_name, text_config, head_dim, heads, kv_heads, report)
    if mlp is not None:
        _research_mlp(mlp, hidden, report)
    # Head geometry the adapter derives from the config (lm_head_dim / lm_num_kv_heads).
    groups = getattr(attn, "num_key_value_groups", None)
    report.add(
        Answer(
            "gqa",
            "Grouped-query attention",
            f"{heads} heads / {kv_heads} kv heads",
            f"text config num_attention_heads={heads}, num_key_value_heads={kv_heads}; "
            f"{type(attn).__name__}.num_key_value_groups = {groups}",
        )
    )
    attn_head_dim = getattr(attn, "head_dim", None)
    consistent = attn_head_dim is None or attn_head_dim == head_dim
    report.add(
        Answer(
            "head_dim",
            "Head dim (explicit or hidden/heads)",
            head_dim,
            (
                f"text config head_dim = {explicit_head_dim} (explicit; hidden/heads = {hidden // heads})"
                if explicit_head_dim and hidden and heads
                else f"hidden_size / num_attention_heads = {hidden} / {heads}"
            )
            + (
                f"; attention.head_dim = {attn_head_dim}"
                if consistent
                else f"; but attention.head_dim = {attn_head_dim}: the adapter's lm_head_dim would be wrong"
            ),
            "found" if consistent else "hand_edit",
            slot="attention_recipe",
        )
    )
    window = config_value(text_config, "sliding_window")
    layer_types = config_value(text_config, "layer_types")
    type_counts = Counter(layer_types or [])
    layer_windows = Counter(
        getattr(getattr(layer, attention_name, None), "sliding_window", None) if attention_name else None
        for layer in layers
    )
    unsupported = sorted(t for t in type_counts if t not in ("full_attention", "sliding_attention"))
    evidence = f"text config sliding_window = {window}; layer_types = {dict(type_counts) or None}; "
    evidence += f"attention.sliding_window per layer: {dict(layer_windows)}"
    if unsupported:
        evidence += (
            f"; layer types {unsupported} are not softmax attention: hooks/attention recomputation need care"
        )
    else:
        evidence += " (the adapter masks each layer with its module's sliding_window)"
    report.add(
        Answer(
            "sliding_window",
            "Sliding windows / layer types",
            dict(type_counts) or window,
            evidence,
            "hand_edit" if unsupported else "found",
            slot="layers",
        )
    )


def _find_projection(children: Mapping[str, nn.Module], role: str) -> str | None:
    for name in _PROJECTION_NAMES[role]:
        if name in children and _is_linear(children[name]):
            return name
    return None


def _research_attention(
    attn: nn.Module,
    layers: list[nn.Module],
    attention_name: str,
    text_config: PretrainedConfig,
    head_dim: int | None,
    heads: int | None,
    kv_heads: int | None,
    report: ResearchReport,
) -> None:
    children = dict(attn.named_children())
    linears = {n: c for n, c in children.items() if _is_linear(c)}
    shapes = ", ".join(f"{n} {c.in_features}->{c.out_features}" for n, c in linears.items())
    fused = [n for n in linears if _FUSED_QKV.match(n)]
    names = {role: _find_projection(children, role) for role in _PROJECTION_NAMES}
    if names["o_proj"] is None and heads and head_dim:
        # The output projection maps heads*head_dim back to hidden; find it by shape when the name is unusual.
        hidden = as_int(config_value(text_config, "hidden_size"))
        by_shape = [
            n
            for n, c in linears.items()
            if c.in_features == heads * head_dim and c.out_features == hidden and n not in names.values()
        ]
        names["o_proj"] = by_shape[0] if len(by_shape) == 1 else None
    for role in ("q_proj", "k_proj", "v_proj", "o_proj"):
        name = names[role]
        status: Status = "found"
        if name is not None:
            module = linears[name]
            evidence = f"{type(attn).__name__}.{name}: Linear {module.in_features} -> {module.out_features}"
            expected = {"q_proj": heads, "k_proj": kv_heads, "v_proj": kv_heads}.get(role)
            if expected and head_dim and module.out_features != expected * head_dim:
                status = "hand_edit"
                gated = role == "q_proj" and module.out_features == 2 * expected * head_dim
                evidence += (
                    f"; out dim {module.out_features} = 2 x heads x head_dim: the query projection is gated "
                    "(half of it gates the output), the generic view(B, L, heads, head_dim) is wrong"
                    if gated
                    else f"; out dim != {expected} heads x {head_dim} head_dim: the generic head split is "
                    "wrong"
                )
        elif fused:
            status = "hand_edit"
            evidence = (
                f"{type(attn).__name__} has no separate {role} but a fused {fused[0]} "
                f"({shapes}): q/k/v hooks and score recomputation need a split by hand"
            )
        else:
            status = "unknown"
            evidence = f"unknown: no {role} among the attention's linear children ({shapes or 'none'})"
        default_name = getattr(ModulePaths, role)
        report.add(
            Answer(
                role,
                f"Attention {role.replace('_proj', '')} projection",
                name or (default_name if status != "unknown" else None),
                evidence,
                status,
            )
        )
    norms = [n for n, c in children.items() if _is_norm(c)]
    analysis = analyze_forward(
        type(attn), q_proj=names["q_proj"], k_proj=names["k_proj"], norm_attributes=norms
    )
    _research_rotary(analysis, attn, layers, attention_name, text_config, report)
    _research_qk_norms(analysis, attn, norms, head_dim, report)
    _research_scaling(analysis, attn, head_dim, report)
    _research_attention_extras(analysis, attn, report)


def _research_rotary(
    analysis: ForwardAnalysis,
    attn: nn.Module,
    layers: list[nn.Module],
    attention_name: str,
    text_config: PretrainedConfig,
    report: ResearchReport,
) -> None:
    question = "Rotary function the attention calls"
    cls = type(attn).__name__
    has_rope = any(
        config_value(text_config, key) for key in ("rope_parameters", "rope_scaling", "rope_theta")
    )
    if not analysis.source_available:
        report.add(
            Answer("rotary_function", question, None, f"unknown: no source for {cls}.forward", "unknown")
        )
        return
    calls = {call.dotted_path: call for call in analysis.rotary_calls}
    if not calls:
        status: Status = "unknown" if has_rope else "found"
        evidence = (
            f"unknown: {cls}.forward calls no *rotary*/*rope* function although the text config has RoPE "
            "parameters; find where RoPE is applied"
            if has_rope
            else f"{cls}.forward calls no rotary function and the text config has no RoPE parameters"
        )
        report.add(Answer("rotary_function", question, None, evidence, status))
        return
    if len(calls) > 1:
        report.add(
            Answer(
                "rotary_function",
                question,
                None,
                f"unknown: {cls}.forward calls several rotary functions: {sorted(calls)}",
                "unknown",
            )
        )
        return
    call = next(iter(calls.values()))
    evidence = f"{cls}.forward calls {call.source}"
    if call.defined_in != analysis.module:
        evidence += f" (imported from {call.defined_in})"
    status = "found"
    value: str | None = call.dotted_path
    # The generic adapter calls rotary(q, k, cos, sin) on [B, H, L, d_h] tensors; anything else is a hand
    # edit.
    signature = inspect.signature(call.function)
    required = [
        p
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    extra_keywords = [k for k in call.keywords if k not in ("unsqueeze_dim", "position_ids")]
    if call.positional_args != 4 or len(required) > 4 or extra_keywords:
        status = "hand_edit"
        evidence += (
            f"; signature {call.name}{signature} / call with {call.positional_args} positional args "
            f"{extra_keywords or ''} differs from the adapter's rotary(q, k, cos, sin)"
        )
    if call.conditions:
        outcomes = []
        for module in (getattr(layer, attention_name) for layer in layers if hasattr(layer, attention_name)):
            results = [evaluate_condition(node, module) for node in call.condition_nodes]
            outcomes.append(None if None in results else all(results))
        condition = " and ".join(call.conditions)
        if None in outcomes:
            status = "hand_edit"
            evidence += f"; applied only if `{condition}`, which depends on runtime values: check by hand"
        elif all(outcomes):
            evidence += (
                f"; applied under `{condition}`, which holds on all {len(layers)} layers of this config"
            )
        elif not any(outcomes):
            value = None
            evidence += f"; but `{condition}` is false on every layer of this config, so no rotary is applied"
        else:
            status = "hand_edit"
            applied = [i for i, o in enumerate(outcomes) if o]
            evidence += (
                f"; applied only where `{condition}` holds (layers {applied}); the adapter applies one "
                "rotary recipe to every layer"
            )
    report.add(Answer("rotary_function", question, value, evidence, status))


def _research_qk_norms(
    analysis: ForwardAnalysis, attn: nn.Module, norms: list[str], head_dim: int | None, report: ResearchReport
) -> None:
    cls = type(attn).__name__
    for role, variable in (("q_norm", analysis.query_var), ("k_norm", analysis.key_var)):
        question = f"Per-head {role.replace('_', ' ')} before RoPE"
        applied = [call for call in analysis.norm_calls if variable and call.variable == variable]
        if not applied:
            evidence = f"{cls}.forward applies no norm to {variable or role[0]}"
            if norms:
                evidence += f" (norm children {norms} are not applied to it)"
            report.add(Answer(role, question, None, evidence))
            continue
        call = applied[0]
        norm = getattr(attn, call.attribute)
        weight = getattr(norm, "weight", None)
        width = weight.shape[-1] if isinstance(weight, torch.Tensor) and weight.dim() else None
        evidence = (
            f"{cls}.forward applies self.{call.attribute} ({_describe(norm)}, width {width}) to {variable}"
        )
        status: Status = "found"
        if len(applied) > 1:
            status = "hand_edit"
            evidence += f"; several norms apply to it: {[c.attribute for c in applied]}"
        if analysis.rotary_line is not None and call.line > analysis.rotary_line:
            status, evidence = (
                "hand_edit",
                evidence + "; but after RoPE (the adapter applies norms before RoPE)",
            )
        if width is not None and head_dim and width != head_dim:
            status = "hand_edit"
            evidence += (
                f"; normalises {width} features, not one head ({head_dim}): the adapter norms per head"
            )
        if call.conditions:
            condition = " and ".join(call.conditions)
            results = [evaluate_condition(node, attn) for node in call.condition_nodes]
            if None in results:
                status, evidence = "hand_edit", evidence + f"; only if `{condition}` (a runtime value)"
            elif not all(results):
                report.add(Answer(role, question, None, evidence + f"; but `{condition}` is false here"))
                continue
            else:
                evidence += f"; under `{condition}`, which holds here"
        report.add(Answer(role, question, call.attribute, evidence, status, slot=role))


def _research_scaling(
    analysis: ForwardAnalysis, attn: nn.Module, head_dim: int | None, report: ResearchReport
) -> None:
    cls = type(attn).__name__
    question = "Softmax scale attribute"
    name = analysis.scaling_attribute
    if name is None and isinstance(getattr(attn, "scaling", None), int | float):
        name = "scaling"
    value = getattr(attn, name, None) if name else None
    if name and isinstance(value, int | float):
        default = head_dim**-0.5 if head_dim else None
        relation = (
            "= head_dim**-0.5" if default and abs(value - default) < 1e-9 else f"(head_dim**-0.5 = {default})"
        )
        source = "passed as scaling=self." + name if analysis.scaling_attribute else "attribute"
        report.add(Answer("scaling", question, name, f"{cls}.{name} = {value:.6g} {relation}; {source}"))
        return
    report.add(
        Answer(
            "scaling",
            question,
            None,
            f"unknown: {cls} passes no scaling=self.<attr> to its attention kernel and has no numeric "
            "`scaling`; the adapter would fall back to head_dim**-0.5",
            "unknown",
        )
    )


def _research_attention_extras(analysis: ForwardAnalysis, attn: nn.Module, report: ResearchReport) -> None:
    """Anything in the score computation beyond the recipe: softcapping, sinks, unknown q/k transforms."""
    cls = type(attn).__name__
    problems: list[str] = []
    softcap = analysis.kernel_keywords.get("softcap")
    softcap_value = getattr(attn, "attn_logit_softcapping", None)
    if softcap_value is not None or (softcap and softcap not in ("None",)):
        problems.append(f"logit softcapping (softcap={softcap}, attn_logit_softcapping={softcap_value})")
    for key in ("sinks", "s_aux"):
        if key in analysis.kernel_keywords:
            problems.append(f"attention sinks ({key}={analysis.kernel_keywords[key]})")
    problems += [f"unrecognized q/k transformation `{line}`" for line in analysis.unrecognized]
    if not analysis.source_available:
        problems.append(f"no source for {cls}.forward")
    report.add(
        Answer(
            "attention_extras",
            "Score computation beyond project/norm/RoPE/GQA/scale",
            "; ".join(problems) or "none",
            (f"{cls}.forward: " + "; ".join(problems) + ": compute_attention_scores needs an override")
            if problems
            else f"{cls}.forward does nothing to q/k beyond the generic recipe "
            f"(kernel keywords: {sorted(analysis.kernel_keywords)})",
            "hand_edit" if problems else "found",
            slot="attention_recipe",
        )
    )


def _research_mlp(mlp: nn.Module, hidden: int | None, report: ResearchReport) -> None:
    cls = _describe(mlp)
    children = dict(mlp.named_children())
    linears = {n: c for n, c in children.items() if _is_linear(c)}
    shapes = ", ".join(f"{n} {c.in_features}->{c.out_features}" for n, c in linears.items()) or "none"
    if "experts" in children or not linears:
        for role in ("gate_proj", "up_proj", "down_proj"):
            report.add(
                Answer(
                    role,
                    f"MLP {role.replace('_proj', '')} projection",
                    None,
                    f"{cls} is a mixture of experts or has no linear children ({sorted(children)}): "
                    "per-expert "
                    "projections do not fit ModulePaths",
                    "hand_edit",
                )
            )
        return
    downs = [n for n, c in linears.items() if c.out_features == hidden]
    ins = [n for n, c in linears.items() if c.in_features == hidden]
    down = downs[0] if len(downs) == 1 else None
    gate = next((n for n in ins if "gate" in n), None)
    ups = [n for n in ins if n != gate]
    up = ups[0] if len(ups) == 1 else None
    role_evidence = ""
    if gate is None and len(ins) == 2:
        # Unconventional names (w1 / w3): the forward source says which one goes through the activation.
        gate, up, role_evidence = gated_mlp_roles(type(mlp), ins)
        ups = [up] if up else ins
    fused = gate is not None and up is None and linears[gate].out_features > 0 and len(ins) == 1
    for role, name in (("gate_proj", gate), ("up_proj", up), ("down_proj", down)):
        question = f"MLP {role.replace('_proj', '')} projection"
        if fused and role in ("gate_proj", "up_proj"):
            report.add(
                Answer(
                    role,
                    question,
                    name if role == "gate_proj" else None,
                    f"{cls}.{gate} fuses gate and up ({shapes}): split it by hand",
                    "hand_edit",
                )
            )
            continue
        if name is not None:
            module = linears[name]
            report.add(
                Answer(
                    role,
                    question,
                    name,
                    f"{cls}.{name}: Linear {module.in_features} -> {module.out_features}"
                    + (f"; {role_evidence}" if role_evidence and role != "down_proj" else ""),
                )
            )
        elif role == "gate_proj" and up is not None:
            report.add(Answer(role, question, None, f"{cls} is not gated: linear children {shapes}"))
        else:
            why = f"; {role_evidence}" if role_evidence else ""
            report.add(
                Answer(
                    role, question, None, f"unknown: cannot tell {role} from {cls}'s {shapes}{why}", "unknown"
                )
            )


def research_structure(model: nn.Module, config: PretrainedConfig, report: ResearchReport) -> None:
    """All module-tree answers: decoder path, layers, final norm, lm_head, attention recipe and MLP."""
    decoder = _research_structure(model, config, report)
    if decoder is not None:
        _research_blocks(decoder, config.get_text_config(decoder=True), report)
