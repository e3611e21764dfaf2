"""Hook-value checks: every hook type caches the value its documented site holds, not just its shape.

Each check compares what ``run_with_cache`` captured with a reference computed *without* vlmforge's
hook machinery (the hook table's sites and directions, ``format_cache_item``, the cache store): what
transformers itself reports (``output_hidden_states``, eager ``output_attentions``), what plain torch
hooks on the model's own modules record, or the adapter's modules called directly on a cached input.
So a hook on the wrong site (the decoder layer instead of the attention), reading the wrong direction
(a layer's output as its input) or splitting heads in the wrong layout (heads and head dims swapped,
shape kept) fails here although every shape is right.

All comparisons are max-abs with the dtype's ``activation`` tolerance, relative to the reference's
magnitude; failures name the layer, position (and head) and the difference. Cached scores and
patterns are checked by :mod:`.cached_attention`; ``hook_post`` and the down projection by
``mlp_decomposition``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from vlmforge.core.adapter import resolve_attribute
from vlmforge.core.roles import GATE_PROJ, INPUT_NORM, K_PROJ, MLP_NORM, Q_PROJ, UP_PROJ, V_PROJ, Role
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.activations import not_a_gated_mlp
from vlmforge.harness.checks.registry import CheckResult, NotApplicable, check
from vlmforge.harness.compare import STATE_AXES, compare_layers
from vlmforge.harness.probes import attentions_by_layer, cached_forward, single_probe

HEAD_AXES = ("batch", "position", "head", "dim")
Pair = tuple[int, torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- instrumentation
def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


@contextlib.contextmanager
def recorded(
    modules: Sequence[nn.Module], direction: Literal["input", "output"]
) -> Iterator[list[torch.Tensor | None]]:
    """Record each module's hidden-states ``"input"`` or ``"output"`` with plain torch hooks.

    Independent of the runtime's hooks by construction: no hook table, no ``format_cache_item``; the
    same module object may be listed twice. Keeps the first call's value (the full prompt).
    """
    values: list[torch.Tensor | None] = [None] * len(modules)
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def keep(index: int, value: torch.Tensor) -> None:
        if values[index] is None:
            values[index] = value.detach().clone()

    for index, module in enumerate(modules):
        if direction == "input":

            def pre_hook(_module: nn.Module, args: tuple, kwargs: dict, index: int = index) -> None:
                keep(index, args[0] if args else kwargs["hidden_states"])

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def hook(_module: nn.Module, _args: tuple, output: Any, index: int = index) -> None:
                keep(index, _first_tensor(output))

            handles.append(module.register_forward_hook(hook))
    try:
        yield values
    finally:
        for handle in handles:
            handle.remove()


def compare_values(
    vlm: HookedVLM, pairs: Iterable[Pair], *, what: str, hint: str, axes: Sequence[str] = STATE_AXES
) -> float:
    """Max-abs compare ``(layer, cached, reference)`` pairs with the relative activation tolerance.

    Fails at the first layer over tolerance, naming the layer and the index along ``axes``.
    """
    return compare_layers(vlm, pairs, kind="activation", what=what, hint=hint, axes=axes)


def undeclared(role: Role) -> NotApplicable:
    """A ``not_applicable`` predicate: the family's spec declares no module for ``role``."""

    def reason(vlm: HookedVLM) -> str | None:
        if role.declared_path(vlm.adapter.spec) is not None:
            return None
        return f"the {vlm.adapter.spec.name} family declares no {role.name} (spec.{role.spec_path} is None)"

    return reason


# ------------------------------------------------------------------------------------ residual
def _strict_positions(vlm: HookedVLM, inputs: Any) -> torch.Tensor:
    """[B, L, 1] bool: positions where ``resid_pre[i + 1]`` must equal layer i's output.

    Everywhere for a strict residual stream; a non-strict family (Qwen3-VL's deepstack) may add to
    the image-token positions between layers, so only the text positions are compared there (the
    capability check verifies the declaration, the layer-input reference covers the image positions).
    Cross-attention blocks between the layers (spec ``modules.cross_attention_blocks``: IDEFICS) write
    every position that attends to an image: none is compared there, the layer-input reference covers all.
    """
    ids = inputs["input_ids"]
    if vlm.adapter.spec.capabilities.strict_residual_stream:
        return torch.ones_like(ids, dtype=torch.bool)[..., None]
    if vlm.adapter.cross_attention_blocks:
        return torch.zeros_like(ids, dtype=torch.bool)[..., None]
    return (~vlm.adapter.image_token_mask(inputs))[..., None]


@check
def hook_values_residual(vlm: HookedVLM) -> CheckResult:
    """``hook_resid_pre``/``hook_resid_post`` equal output_hidden_states and each decoder layer's in/out."""
    inputs = single_probe(vlm)
    # Plain torch hooks on the spec's layer list (not the adapter's per-layer accessor, which the runtime
    # uses): a second reference for what hidden_states cannot show (image positions under deepstack,
    # the last layer's pre-norm output).
    layers = list(vlm.adapter.lm_layers)
    with recorded(layers, "input") as layer_in, recorded(layers, "output") as layer_out:
        outputs, cache = cached_forward(
            vlm, ("hook_resid_pre", "hook_resid_post"), inputs, output_hidden_states=True
        )
    # transformers 5.20-5.24 report hidden_states[0] = layer 0's input (the merged text + image embeddings),
    # hidden_states[i + 1] = layer i's output as the layer returned it (before deepstack adds anything)
    # and, for the last layer, the decoder's output *after* the final norm instead.
    # The residual stream as the hooks show it: the active one where the layers pass parallel streams.
    view = vlm.adapter.residual_view
    hidden = [view(states) for states in outputs.hidden_states]
    layer_in = [view(states) for states in layer_in]
    layer_out = [view(states) for states in layer_out]
    strict = _strict_positions(vlm, inputs)
    last = len(cache) - 1

    def pre_vs_hidden_states() -> Iterator[Pair]:
        for layer, values in enumerate(cache):
            pre, reported = values["hook_resid_pre"], hidden[layer]
            yield layer, pre, reported if layer == 0 else torch.where(strict, reported, pre)

    hint = "the hook_resid_pre / hook_resid_post sites (decoder layer input / output)"
    worst = compare_values(
        vlm, pre_vs_hidden_states(), what="hook_resid_pre vs output_hidden_states[i]", hint=hint
    )
    worst = max(
        worst,
        compare_values(
            vlm,
            ((layer, cache[layer]["hook_resid_post"], hidden[layer + 1]) for layer in range(last)),
            what="hook_resid_post vs output_hidden_states[i + 1]",
            hint=hint,
        ),
        compare_values(
            vlm,
            ((layer, values["hook_resid_pre"], layer_in[layer]) for layer, values in enumerate(cache)),
            what="hook_resid_pre vs the decoder layer's input",
            hint=hint,
        ),
        compare_values(
            vlm,
            ((layer, values["hook_resid_post"], layer_out[layer]) for layer, values in enumerate(cache)),
            what="hook_resid_post vs the decoder layer's output",
            hint=hint,
        ),
    )
    compared = "all" if bool(strict.all()) else f"{int(strict.sum())} text"
    return CheckResult(worst, f"{len(cache)} layers; hidden_states compared at {compared} positions")


# ----------------------------------------------------------------------------------- attention
def _input_norm_reads_mix(vlm: HookedVLM) -> str | None:
    """Why ``attn.hook_in`` is no function of ``hook_resid_pre``: no input norm is declared, or the decoder
    layers pass parallel residual streams and the attention reads the norm of a mix of them."""
    if (undeclared_norm := undeclared(INPUT_NORM)(vlm)) is not None:
        return undeclared_norm
    if vlm.adapter.spec.active_stream is not None:
        return (
            "the decoder layers pass parallel residual streams (spec.active_stream = "
            f"{vlm.adapter.spec.active_stream!r}) and the attention reads the input norm of a mix of them "
            "(AltUp's prediction), not of the hooked stream"
        )
    return None


@check(not_applicable=_input_norm_reads_mix)
def hook_values_attention_in(vlm: HookedVLM) -> CheckResult:
    """``attn.hook_in`` equals the input norm applied to ``hook_resid_pre``."""
    _, cache = cached_forward(vlm, ("hook_resid_pre", "attn.hook_in"), single_probe(vlm))
    worst = compare_values(
        vlm,
        (
            (layer, values["attn.hook_in"], vlm.adapter.get_lm_input_norm(layer)(values["hook_resid_pre"]))
            for layer, values in enumerate(cache)
            if "attn.hook_in" in values  # a hybrid decoder's linear-attention layer has no attention input
        ),
        what="attn.hook_in vs input_norm(hook_resid_pre)",
        hint="the attn.hook_in site (the attention module's input, after the input norm) / get_lm_input_norm",
    )
    return CheckResult(worst, f"{len(cache)} layers")


def _split_heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, L, heads * d_h] -> [B, L, heads, d_h], head-major, as the model's attention views it."""
    return states.view(*states.shape[:-1], -1, head_dim)


def _head_dim(vlm: HookedVLM, layer: int) -> int:
    # The attention module's own head_dim (what its forward reshapes with), not the adapter's claim.
    return int(getattr(vlm.adapter.get_lm_attn(layer), "head_dim", vlm.adapter.lm_head_dim))


def _z_reference(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-head values [B, L, H, d_h] = pattern [B, H, L, L] @ v [B, L, H_kv, d_h] (kv heads expanded)."""
    values = v.transpose(1, 2).repeat_interleave(pattern.shape[1] // v.shape[2], dim=1)
    return torch.matmul(pattern.to(values.dtype), values).transpose(1, 2)


def _head_out_reference(z: torch.Tensor, o_proj: nn.Module) -> torch.Tensor:
    """Each head's write [B, L, H, D]: z of that head through its own column block of o_proj's weight."""
    head_dim = z.shape[-1]
    weight = o_proj.weight
    blocks = [
        nn.functional.linear(z[..., head, :], weight[:, head * head_dim : (head + 1) * head_dim])
        for head in range(z.shape[2])
    ]
    return torch.stack(blocks, dim=2)


def _attention_reference(
    vlm: HookedVLM, hook: str, layer: int, values: dict[str, torch.Tensor], pattern: torch.Tensor
) -> torch.Tensor:
    """The reference value of attention hook ``hook`` in ``layer``, from the layer's cached input and z."""
    a, hook_in, z = vlm.adapter, values["attn.hook_in"], values["attn.hook_z"]
    if hook in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        role = {"attn.hook_q": Q_PROJ, "attn.hook_k": K_PROJ}.get(hook, V_PROJ)
        # The projection's output (its query half, for a gated query) split into heads.
        return _split_heads(a.project(role, layer, hook_in), _head_dim(vlm, layer))
    if hook == "attn.hook_z":
        v = values["attn.hook_v"]
        if a.spec.attention.v_norm is not None:
            # The attention attends to the values normed per head (spec attention.v_norm).
            v = resolve_attribute(a.get_lm_attn(layer), a.spec.attention.v_norm, what="value norm")(v)
        z = _z_reference(pattern, v)
        if a.spec.attention.query_gate:
            # o_proj reads the attention output gated per head by sigmoid(gate), the gate being the second
            # half of each head's q_proj output (spec attention.query_gate).
            raw = a.get_lm_q_proj(layer)(hook_in)
            gate = raw.view(*raw.shape[:-1], -1, 2 * z.shape[-1])[..., z.shape[-1] :]
            z = z * torch.sigmoid(gate)
        if a.spec.attention.output_norm is not None:
            # o_proj reads the head outputs normed together (spec attention.output_norm).
            attn = a.get_lm_attn(layer)
            norm = resolve_attribute(attn, a.spec.attention.output_norm, what="attention output norm")
            z = norm(z.flatten(-2)).view(z.shape)
        return z
    if hook == "attn.hook_head_out":
        return _head_out_reference(z, a.get_lm_o_proj(layer))
    return a.get_lm_o_proj(layer)(z.flatten(-2))


#: Each attention hook checked by :func:`hook_values_attention` and what its reference is.
ATTENTION_REFERENCES = {
    "attn.hook_q": "q_proj(attn.hook_in) split into [B, L, H, d_h] (before q norm and RoPE)",
    "attn.hook_k": "k_proj(attn.hook_in) split into [B, L, H_kv, d_h] (before k norm and RoPE)",
    "attn.hook_v": "v_proj(attn.hook_in) split into [B, L, H_kv, d_h]",
    "attn.hook_z": "eager output_attentions @ attn.hook_v (through the declared value norm, if any; times "
    "sigmoid(gate) for a gated query; through the declared output norm, if any)",
    "attn.hook_head_out": "each head's z through its o_proj column block",
    "attn.hook_out": "o_proj(attn.hook_z flattened)",
}


@check
def hook_values_attention(vlm: HookedVLM) -> CheckResult:
    """``attn.hook_q/k/v`` are the projections of ``attn.hook_in``; z, head_out and out follow from them."""
    hooks = ("attn.hook_in", *ATTENTION_REFERENCES)
    outputs, cache = cached_forward(vlm, hooks, single_probe(vlm), output_attentions=True)
    worst = 0.0
    # output_attentions has one entry per softmax-attention layer (all layers but a hybrid's others).
    attention = attentions_by_layer(vlm, outputs.attentions)
    for hook, reference in ATTENTION_REFERENCES.items():
        pairs = (
            (layer, values[hook], _attention_reference(vlm, hook, layer, values, attention[layer]))
            for layer, values in enumerate(cache)
            if layer in attention
        )
        difference = compare_values(
            vlm,
            pairs,
            what=f"{hook} vs {reference}",
            hint="the hook's site, format_cache_item's head split (head-major [heads, d_h]), "
            "lm_num_heads / lm_num_kv_heads / lm_head_dim",
            axes=STATE_AXES if hook == "attn.hook_out" else HEAD_AXES,
        )
        worst = max(worst, difference)
    return CheckResult(worst, f"{len(cache)} layers x {len(ATTENTION_REFERENCES)} hook types")


# ----------------------------------------------------------------------------------------- MLP
@check(not_applicable=undeclared(MLP_NORM))
def hook_values_mlp_in(vlm: HookedVLM) -> CheckResult:
    """``mlp.hook_in`` equals what the MLP norm module outputs in the same forward pass."""
    norms = [vlm.adapter.get_lm_mlp_norm(layer) for layer in range(vlm.lm_num_layers)]
    # A plain torch hook on the norm records norm(its real input), whatever the block's wiring (pre-norm,
    # sandwich norms, deepstack): independent of the hook table's MLP site and of the residual hooks.
    with recorded(norms, "output") as normed:
        _, cache = cached_forward(vlm, ("mlp.hook_in",), single_probe(vlm))
    worst = compare_values(
        vlm,
        ((layer, values["mlp.hook_in"], normed[layer]) for layer, values in enumerate(cache)),
        what="mlp.hook_in vs the MLP norm's output",
        hint="the mlp.hook_in site (the MLP module's input) / get_lm_mlp_norm",
    )
    return CheckResult(worst, f"{len(cache)} layers")


@check
def hook_values_mlp_out(vlm: HookedVLM) -> CheckResult:
    """``mlp.hook_out`` equals the MLP module called on ``mlp.hook_in``."""
    _, cache = cached_forward(vlm, ("mlp.hook_in", "mlp.hook_out"), single_probe(vlm))
    worst = compare_values(
        vlm,
        (
            (layer, values["mlp.hook_out"], vlm.adapter.run_lm_mlp(layer, values["mlp.hook_in"]))
            for layer, values in enumerate(cache)
        ),
        what="mlp.hook_out vs mlp(mlp.hook_in)",
        hint="the mlp.hook_in / mlp.hook_out sites (MLP module input / output) / get_lm_mlp",
    )
    return CheckResult(worst, f"{len(cache)} layers")


@check(not_applicable=not_a_gated_mlp)
def hook_values_mlp_gate_up(vlm: HookedVLM) -> CheckResult:
    """``mlp.hook_pre`` == gate_proj(``mlp.hook_in``), ``mlp.hook_pre_linear`` == up_proj(``mlp.hook_in``)."""
    _, cache = cached_forward(vlm, ("mlp.hook_in", "mlp.hook_pre", "mlp.hook_pre_linear"), single_probe(vlm))
    a = vlm.adapter
    worst = 0.0
    dense = [(layer, values) for layer, values in enumerate(cache) if "mlp.hook_pre" in values]
    for hook, role in (("mlp.hook_pre", GATE_PROJ), ("mlp.hook_pre_linear", UP_PROJ)):
        worst = max(
            worst,
            compare_values(
                vlm,
                (
                    (layer, values[hook], a.project(role, layer, values["mlp.hook_in"]))
                    for layer, values in dense
                ),
                what=f"{hook} vs {role.name}(mlp.hook_in)",
                hint=f"the {hook} site / the spec's gate_proj and up_proj (or fused gate_up_proj) names",
            ),
        )
    return CheckResult(worst, f"{len(dense)} dense layers x 2 hook types")
