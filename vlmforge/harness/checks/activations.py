"""Activation checks: what the hooks cache agrees with the model's own outputs, and caching is harmless."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from vlmforge.core.hooks import HOOK_TYPES
from vlmforge.core.roles import DOWN_PROJ, GATE_PROJ, UP_PROJ
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, assert_close, compare_layers, max_abs_difference
from vlmforge.harness.probes import cached_forward, single_probe, visible_logits
from vlmforge.harness.tolerances import scaled, tolerance_for


def cached_per_layer(vlm: HookedVLM, hook_types: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    """Forward the single probe caching ``hook_types``; one {hook type: activation} dict per layer."""
    return cached_forward(vlm, hook_types, single_probe(vlm))[1]


@check
def resid_post_vs_hidden_states(vlm: HookedVLM) -> CheckResult:
    """``hook_resid_post[i]`` equals ``output_hidden_states[i + 1]`` (the final norm for the last layer)."""
    with vlm.run_with_cache("lm.blocks.*.hook_resid_post"):
        hidden_states = vlm.forward(single_probe(vlm), output_hidden_states=True).hidden_states
    layers = vlm.lm_num_layers
    if hidden_states is None or len(hidden_states) != layers + 1:
        count = "no" if hidden_states is None else len(hidden_states)
        raise CheckFailure(f"output_hidden_states returned {count} entries for {layers} layers")
    cached = [vlm.cache[f"lm.blocks.{layer}.hook_resid_post"] for layer in range(layers)]
    # The residual stream as the hooks show it (the active one of stacked parallel streams).
    hidden_states = [vlm.adapter.residual_view(states) for states in hidden_states]
    last, reported_last = cached[-1], hidden_states[-1]
    if max_abs_difference(last, reported_last).value > scaled(
        tolerance_for(vlm.dtype).activation, reported_last
    ):
        # transformers 5 reports the last entry after the decoder's final norm (all seed families).
        cached[-1] = vlm.adapter.get_lm_norm()(last)
    worst = compare_layers(
        vlm,
        ((layer, cached[layer], hidden_states[layer + 1]) for layer in range(layers)),
        kind="activation",
        what="hook_resid_post vs output_hidden_states",
        hint="the language model / layers path (off-by-one?)",
    )
    return CheckResult(worst, f"{layers} layers")


@check
def head_out_sum(vlm: HookedVLM) -> CheckResult:
    """Per-head outputs summed over heads (+ o_proj bias) equal ``attn.hook_out``."""
    per_layer = cached_per_layer(vlm, ("attn.hook_head_out", "attn.hook_out"))

    def pairs() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for layer, cache in enumerate(per_layer):
            if "attn.hook_out" not in cache:  # no softmax attention in this layer (hybrid decoder)
                continue
            bias = vlm.adapter.get_lm_o_proj(layer).bias
            total = cache["attn.hook_head_out"].sum(dim=2)
            yield layer, total if bias is None else total + bias, cache["attn.hook_out"]

    worst = compare_layers(
        vlm,
        pairs(),
        kind="activation",
        what="sum of attn.hook_head_out vs attn.hook_out",
        hint="compute_per_head_contributions / lm_num_heads / lm_head_dim",
    )
    return CheckResult(worst)


def not_a_gated_mlp(vlm: HookedVLM) -> str | None:
    """Why the gated-MLP checks do not apply: no gate/up/down projection declared, or no dense layer."""
    spec = vlm.adapter.spec
    if spec.moe.experts is not None and not vlm.hook_layers("mlp.hook_post"):
        return "no dense MLP layer: every layer's MLP is a mixture of experts (see moe_decomposition)"
    missing = [role.name for role in (GATE_PROJ, UP_PROJ, DOWN_PROJ) if role.declared_path(spec) is None]
    if missing:
        return f"not a gated MLP (the spec has no {', '.join(missing)})"
    if not vlm.hook_layers("mlp.hook_pre"):
        return "no dense MLP layer: every layer's MLP is a mixture of experts (see moe_decomposition)"
    return None


@check(not_applicable=not_a_gated_mlp)
def mlp_decomposition(vlm: HookedVLM) -> CheckResult:
    """act(hook_pre) * hook_pre_linear == hook_post and down_proj(hook_post) == hook_out, on dense layers.

    Where the MLP transforms the gate before its activation (``spec.modules.gate_transform``, e.g. a top-k
    sparsification), the activation reads the gate through the module's own transform on the layers the
    declared condition selects.
    """
    per_layer = cached_per_layer(
        vlm, ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "mlp.hook_out")
    )
    dense = [(layer, cache) for layer, cache in enumerate(per_layer) if "mlp.hook_pre" in cache]
    activations = {layer: _activation(vlm.adapter.get_lm_mlp(layer)) for layer, _ in dense}
    gated = compare_layers(
        vlm,
        (
            (
                layer,
                activations[layer](vlm.adapter.gate_activation_input(cache["mlp.hook_pre"], layer))
                * cache["mlp.hook_pre_linear"],
                cache["mlp.hook_post"],
            )
            for layer, cache in dense
            if activations[layer] is not None
        ),
        kind="activation",
        what="act(hook_pre) * hook_pre_linear vs hook_post",
        hint="gate_proj / up_proj (or the fused gate_up_proj's halves), gate_transform / "
        "gate_transform_condition in the spec",
    )
    down = compare_layers(
        vlm,
        (
            (layer, vlm.adapter.get_lm_down_proj(layer)(cache["mlp.hook_post"]), cache["mlp.hook_out"])
            for layer, cache in dense
        ),
        kind="activation",
        what="down_proj(hook_post) vs hook_out",
        hint="down_proj name in the spec",
    )
    return CheckResult(max(gated, down), f"{len(dense)} dense layers")


def _activation(mlp: torch.nn.Module) -> Any:
    """The MLP's activation module (``act_fn`` in Llama-style MLPs, ``activation_fn`` in others)."""
    return next(
        (getattr(mlp, name) for name in ("act_fn", "activation_fn", "act") if hasattr(mlp, name)), None
    )


def not_moe(vlm: HookedVLM) -> str | None:
    """Why :func:`moe_decomposition` does not apply: no mixture-of-experts layer."""
    if vlm.adapter.spec.moe.experts is None:
        return "no mixture-of-experts MLP (spec.moe.experts is empty)"
    if not vlm.hook_layers("mlp.hook_experts_out"):
        return f"no layer's MLP has {vlm.adapter.spec.moe.experts!r}: every layer is dense"
    return None


def _router_outputs(routers: dict[int, torch.nn.Module]) -> tuple[dict[int, list[torch.Tensor]], list[Any]]:
    """Plain torch hooks recording every tensor each router returns (first call)."""
    outputs: dict[int, list[torch.Tensor]] = {}

    def keep(layer: int, output: Any) -> None:
        items = output if isinstance(output, tuple | list) else (output,)
        outputs.setdefault(layer, [t.detach().clone() for t in items if isinstance(t, torch.Tensor)])

    handles = [
        router.register_forward_hook(lambda _m, _a, out, layer=layer: keep(layer, out))
        for layer, router in routers.items()
    ]
    return outputs, handles


@check(not_applicable=not_moe)
def moe_decomposition(vlm: HookedVLM) -> CheckResult:
    """On MoE layers: ``mlp.hook_router_logits`` is what the router computes, and ``mlp.hook_experts_out``
    is exactly what the routed experts add to ``mlp.hook_out`` (zeroing it removes exactly that much)."""
    a = vlm.adapter
    layers = vlm.hook_layers("mlp.hook_experts_out")
    routers = {layer: a.get_lm_router(layer) for layer in vlm.hook_layers("mlp.hook_router_logits")}
    recorded, handles = _router_outputs(routers)
    try:
        per_layer = cached_per_layer(
            vlm, ("mlp.hook_in", "mlp.hook_out", "mlp.hook_router_logits", "mlp.hook_experts_out")
        )
    finally:
        for handle in handles:
            handle.remove()
    worst = 0.0
    tolerance = tolerance_for(vlm.dtype).activation
    for layer in routers:
        logits = per_layer[layer]["mlp.hook_router_logits"]
        flat = logits.reshape(-1, logits.shape[-1])
        candidates = [t for t in recorded.get(layer, []) if t.shape == flat.shape]
        differences = [max_abs_difference(flat, t.reshape(flat.shape)).value for t in candidates]
        if not differences or min(differences) > scaled(tolerance, flat):
            raise CheckFailure(
                f"mlp.hook_router_logits of layer {layer} matches none of the router's outputs "
                f"({[tuple(t.shape) for t in recorded.get(layer, [])]})",
                max_diff=min(differences, default=float("nan")),
                where=f"layer {layer}",
                hint="spec.moe.router / compute_router_logits",
            )
        worst = max(worst, min(differences))

    def zero(activation: torch.Tensor, _point: Any) -> torch.Tensor:
        return torch.zeros_like(activation)

    pairs = []
    for layer in layers:
        values = per_layer[layer]
        with torch.no_grad(), vlm.run_with_hooks([(f"lm.blocks.{layer}.mlp.hook_experts_out", zero)]):
            without = a.run_lm_mlp(layer, values["mlp.hook_in"])
        without = without[0] if isinstance(without, tuple) else without
        pairs.append((layer, values["mlp.hook_out"] - without, values["mlp.hook_experts_out"]))
    worst = max(
        worst,
        compare_layers(
            vlm,
            pairs,
            kind="activation",
            what="mlp.hook_out minus the MLP's output with the experts zeroed vs mlp.hook_experts_out",
            hint="spec.moe.experts: the module whose output is the routing-weighted sum of the experts",
        ),
    )
    return CheckResult(worst, f"{len(layers)} MoE layers")


def parallel_streams(vlm: HookedVLM) -> str | None:
    """Why the final ``hook_resid_post`` is no logit lens of the logits: the decoder layers pass parallel
    residual streams (``spec.active_stream``) and the logits read a combination of them all."""
    attribute = vlm.adapter.spec.active_stream
    if attribute is None:
        return None
    return (
        f"the decoder layers pass parallel residual streams and the hooks show stream "
        f"{vlm.adapter.active_stream} (spec.active_stream = {attribute!r}); the decoder combines all of them "
        "before the final norm, so no single hooked stream unembeds to the logits"
    )


def one_residual_stream(vlm: HookedVLM) -> str | None:
    """Why there is no active stream to check: the decoder layers pass one [B, L, D] residual stream."""
    if vlm.adapter.spec.active_stream is None:
        return "the decoder layers pass one residual stream (spec.active_stream is None)"
    return None


@check(not_applicable=one_residual_stream)
def active_stream_carries_the_embeddings(vlm: HookedVLM) -> CheckResult:
    """The stream the residual hooks show (``spec.active_stream``) enters layer 0 as the decoder's
    ``inputs_embeds``: the parallel streams are projections of the embeddings, the active one is them
    (transformers' AltUp stacks the embeddings first, and Gemma3n configs make stream 0 the active one).

    ``resid_post_vs_hidden_states`` reads ``output_hidden_states`` through the same stream index, so only an
    independent reference (what the decoder was handed) can tell a wrong index from the right one.
    """
    received: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if isinstance(embeds, torch.Tensor):
            received.append(embeds.detach().clone())

    handle = vlm.adapter.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with vlm.run_with_cache("lm.blocks.0.hook_resid_pre"):
            vlm.forward(single_probe(vlm))
    finally:
        handle.remove()
    if not received:
        raise CheckFailure(
            "the decoder received no inputs_embeds keyword",
            hint="spec.language_model: the module the VLM hands its (image-filled) embeddings to",
        )
    resid_pre = vlm.cache["lm.blocks.0.hook_resid_pre"]
    tolerance = scaled(tolerance_for(vlm.dtype).activation, received[0])
    difference = max_abs_difference(resid_pre, received[0])
    if difference.value > tolerance:
        raise CheckFailure(
            f"lm.blocks.0.hook_resid_pre (stream {vlm.adapter.active_stream}) differs from the decoder's "
            f"inputs_embeds by more than {tolerance:.3g}",
            max_diff=difference.value,
            where=difference.describe(("batch", "position", "hidden")),
            hint="spec.active_stream: the config attribute holding the index of the stream the others are "
            "projected from",
        )
    return CheckResult(difference.value, f"stream {vlm.adapter.active_stream}; tolerance {tolerance:.3g}")


@check(not_applicable=parallel_streams)
def logit_lens(vlm: HookedVLM) -> CheckResult:
    """lm_head(final_norm(last hook_resid_post)), under the declared logit mask, equals the model's logits.

    With a declared ``spec.logit_mask`` the model's logits must hold the dtype minimum on exactly those
    ids, and the lens must match on every other column (an undeclared masked column fails there).
    """
    last = f"lm.blocks.{vlm.lm_num_layers - 1}.hook_resid_post"
    with vlm.run_with_cache(last):
        logits = vlm.forward(single_probe(vlm)).logits
    lens = vlm.adapter.get_lm_head()(vlm.adapter.get_lm_norm()(vlm.cache[last]))
    mask = vlm.adapter.get_logit_mask()
    detail = ""
    if mask is not None:
        pinned = logits[..., mask.to(logits.device)] == torch.finfo(logits.dtype).min
        if not pinned.all():
            raise CheckFailure(
                f"{int((~pinned).sum())} logits of the {mask.numel()} ids of spec.logit_mask are not the "
                "dtype minimum in the model's output: the model does not mask them",
                hint="spec.logit_mask",
            )
        detail = f"{mask.numel()} masked ids (spec.logit_mask) at the dtype minimum"
    worst = assert_close(
        visible_logits(vlm, lens),
        visible_logits(vlm, logits),
        tolerance=tolerance_for(vlm.dtype).activation,
        relative=True,
        what="logit lens vs logits",
        axes=("batch", "position", "vocab"),
        hint="the final norm / lm_head paths / spec.logit_mask",
    )
    return CheckResult(worst, detail)


@check
def cache_non_invasive(vlm: HookedVLM) -> CheckResult:
    """Logits are bit-identical with and without caching every hook."""
    inputs = single_probe(vlm)
    plain = vlm.forward(inputs).logits
    hook_types = [hook for hook in HOOK_TYPES if vlm.hook_layers(hook)]
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in hook_types]):
        cached = vlm.forward(inputs).logits
    if not torch.equal(plain, cached):
        difference = max_abs_difference(cached, plain)
        raise CheckFailure(
            "caching changed the logits",
            max_diff=difference.value,
            where=difference.describe(("batch", "position", "vocab")),
            hint="a hook that modifies its activation in place or returns a value",
        )
    return CheckResult(0.0, f"{len(hook_types)} hook types on {vlm.lm_num_layers} layers")


@check
def outputs_finite(vlm: HookedVLM) -> CheckResult:
    """The forward pass produces finite logits (no NaN / Inf)."""
    logits = vlm.forward(single_probe(vlm)).logits
    bad = ~torch.isfinite(logits)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise CheckFailure(
            f"{int(bad.sum())} non-finite logits (NaN/Inf), first at (batch, position, vocab) {first}",
            hint="dtype overflow (try float32 / bfloat16), broken weights",
        )
    return CheckResult(detail=f"{logits.numel()} finite logits")
