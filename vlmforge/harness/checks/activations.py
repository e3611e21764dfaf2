"""Activation checks: what the hooks cache agrees with the model's own outputs, and caching is harmless."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from vlmforge.core.hooks import HOOK_TYPES
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, assert_close, compare_layers, max_abs_difference
from vlmforge.harness.probes import cached_forward, single_probe
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
    """Why :func:`mlp_decomposition` does not apply: the spec names no gate/up/down projection."""
    modules = vlm.adapter.spec.modules
    missing = [name for name in ("gate_proj", "up_proj", "down_proj") if getattr(modules, name) is None]
    return f"not a gated MLP (the spec has no {', '.join(missing)})" if missing else None


@check(not_applicable=not_a_gated_mlp)
def mlp_decomposition(vlm: HookedVLM) -> CheckResult:
    """act(hook_pre) * hook_pre_linear == hook_post and down_proj(hook_post) == hook_out."""
    per_layer = cached_per_layer(
        vlm, ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "mlp.hook_out")
    )
    activations = [getattr(vlm.adapter.get_lm_mlp(layer), "act_fn", None) for layer in range(len(per_layer))]
    gated = compare_layers(
        vlm,
        (
            (layer, act(cache["mlp.hook_pre"]) * cache["mlp.hook_pre_linear"], cache["mlp.hook_post"])
            for layer, (cache, act) in enumerate(zip(per_layer, activations))
            if act is not None
        ),
        kind="activation",
        what="act(hook_pre) * hook_pre_linear vs hook_post",
        hint="gate_proj / up_proj names in the spec",
    )
    down = compare_layers(
        vlm,
        (
            (layer, vlm.adapter.get_lm_down_proj(layer)(cache["mlp.hook_post"]), cache["mlp.hook_out"])
            for layer, cache in enumerate(per_layer)
        ),
        kind="activation",
        what="down_proj(hook_post) vs hook_out",
        hint="down_proj name in the spec",
    )
    return CheckResult(max(gated, down))


@check
def logit_lens(vlm: HookedVLM) -> CheckResult:
    """lm_head(final_norm(last hook_resid_post)) equals the model's logits."""
    last = f"lm.blocks.{vlm.lm_num_layers - 1}.hook_resid_post"
    with vlm.run_with_cache(last):
        logits = vlm.forward(single_probe(vlm)).logits
    lens = vlm.adapter.get_lm_head()(vlm.adapter.get_lm_norm()(vlm.cache[last]))
    worst = assert_close(
        lens,
        logits,
        tolerance=tolerance_for(vlm.dtype).activation,
        relative=True,
        what="logit lens vs logits",
        axes=("batch", "position", "vocab"),
        hint="the final norm / lm_head paths",
    )
    return CheckResult(worst)


@check
def cache_non_invasive(vlm: HookedVLM) -> CheckResult:
    """Logits are bit-identical with and without caching every hook."""
    inputs = single_probe(vlm)
    plain = vlm.forward(inputs).logits
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in HOOK_TYPES]):
        cached = vlm.forward(inputs).logits
    if not torch.equal(plain, cached):
        difference = max_abs_difference(cached, plain)
        raise CheckFailure(
            "caching changed the logits",
            max_diff=difference.value,
            where=difference.describe(("batch", "position", "vocab")),
            hint="a hook that modifies its activation in place or returns a value",
        )
    return CheckResult(0.0, f"{len(HOOK_TYPES)} hook types on {vlm.lm_num_layers} layers")


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
