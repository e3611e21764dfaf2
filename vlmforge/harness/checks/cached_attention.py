"""Cached attention checks: ``attn.hook_pattern`` / ``attn.hook_scores`` as a user reads them.

:mod:`.attention` calls the adapter's ``compute_attention_*`` directly on captured inputs; these
checks go through the runtime instead (``run_with_cache`` around ``forward`` or ``generate``), so
they also prove that the runtime hands the recomputation the layer's own ``position_embeddings``
(M-RoPE) and ``attention_mask`` (padding), and that KV-cached decoding steps leave the cached
prompt pass alone. The reference is eager ``output_attentions`` of the very same pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vlmforge.core.adapter import causal_mask
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.attention import real_query_rows
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, compare_layers
from vlmforge.harness.probes import AttentionCall, probe_batch, run_eager_with_attention_inputs, single_probe

ATTENTION_HOOKS = ("attn.hook_pattern", "attn.hook_scores")
#: Where to look when a cached pattern disagrees with eager: the runtime's computed-hook plumbing.
RUNTIME_HINT = (
    "HookedVLM's recomputed attention hooks: they must pass the layer's own position_embeddings "
    "and attention_mask to compute_attention_*, and run on full passes only"
)


@contextlib.contextmanager
def eager_attention(vlm: HookedVLM) -> Iterator[None]:
    """Run the block with eager attention, the only implementation that returns its weights.

    The adapter selects eager today; this keeps the reference explicit should a model run SDPA
    (which refuses ``output_attentions``), and restores the model's own implementation afterwards.
    """
    previous = getattr(vlm.model.config, "_attn_implementation", None)
    current = getattr(vlm.adapter.lm_config, "_attn_implementation", previous)
    if current in (None, "eager") or not callable(getattr(vlm.model, "set_attn_implementation", None)):
        yield
        return
    vlm.model.set_attn_implementation("eager")
    try:
        yield
    finally:
        vlm.model.set_attn_implementation(previous)


def cached(vlm: HookedVLM, hook_type: str) -> list[torch.Tensor]:
    """The cached activation of ``hook_type`` for every layer, failing clearly when one is missing."""
    names = [f"lm.blocks.{layer}.{hook_type}" for layer in range(vlm.lm_num_layers)]
    missing = [name for name in names if name not in vlm.cache]
    if missing:
        raise CheckFailure(f"run_with_cache cached nothing for {', '.join(missing)}", hint=RUNTIME_HINT)
    return [vlm.cache[name] for name in names]


def layer_mask(vlm: HookedVLM, call: AttentionCall, scores: torch.Tensor) -> torch.Tensor:
    """The additive fp32 mask eager added to ``call``'s scores (causal, windowed, when none was passed)."""
    if call.attention_mask is None:
        window = getattr(vlm.adapter.get_lm_attn(call.layer), "sliding_window", None)
        return causal_mask(scores.shape[0], scores.shape[-1], torch.float32, scores.device, window)
    return call.attention_mask[..., : scores.shape[-1]].float()


def compare_cached_attention(vlm: HookedVLM, inputs: Any) -> float:
    """Patterns and scores cached by ``run_with_cache`` vs eager ``output_attentions`` of the same forward.

    Patterns are compared directly; scores through softmax(scores + the layer's mask), rounded to the
    model dtype as eager rounds its weights. Rows of padding queries are excluded, as in
    :func:`~vlmforge.harness.checks.attention.compare_attention_to_eager`.
    """
    with eager_attention(vlm), vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in ATTENTION_HOOKS]):
        outputs, calls = run_eager_with_attention_inputs(vlm, inputs)
    eager = outputs.attentions
    if eager is None or len(eager) != vlm.lm_num_layers:
        raise CheckFailure(
            "the model returned no per-layer attentions under eager with output_attentions=True"
        )
    padding = ~real_query_rows(inputs)
    patterns, scores = cached(vlm, "attn.hook_pattern"), cached(vlm, "attn.hook_scores")

    def from_scores() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for call, layer_scores, reference in zip(calls, scores, eager):
            softmax = torch.softmax(layer_scores.float() + layer_mask(vlm, call, layer_scores), dim=-1)
            yield (
                call.layer,
                softmax.to(reference.dtype).masked_fill(padding, 0),
                reference.masked_fill(padding, 0),
            )

    worst = compare_layers(
        vlm,
        (
            (layer, pattern.masked_fill(padding, 0), reference.masked_fill(padding, 0))
            for layer, (pattern, reference) in enumerate(zip(patterns, eager))
        ),
        kind="pattern",
        what="cached attn.hook_pattern (run_with_cache) vs eager output_attentions",
        hint=RUNTIME_HINT,
    )
    return max(
        worst,
        compare_layers(
            vlm,
            from_scores(),
            kind="pattern",
            what="softmax(cached attn.hook_scores + mask) vs eager output_attentions",
            hint=RUNTIME_HINT,
        ),
    )


@check
def cached_patterns_vs_eager(vlm: HookedVLM) -> CheckResult:
    """Patterns and scores read from ``run_with_cache`` equal eager ``output_attentions`` (single input)."""
    worst = compare_cached_attention(vlm, single_probe(vlm))
    return CheckResult(worst, f"{vlm.lm_num_layers} layers x {vlm.adapter.lm_num_heads} heads")


@check(requires="supports_batching")
def cached_patterns_vs_eager_padded_batch(vlm: HookedVLM) -> CheckResult:
    """Patterns and scores read from ``run_with_cache`` equal eager ``output_attentions`` (padded batch)."""
    prompts, images = probe_batch(2)
    worst = compare_cached_attention(vlm, vlm.prepare_messages_batch(prompts, images))
    return CheckResult(worst, "left-padded batch of 2")


def _assert_prompt_shapes(vlm: HookedVLM, eager_first_step: tuple[torch.Tensor, ...]) -> None:
    """Every cached pattern / score has the prompt pass's shape: no decoding step overwrote it."""
    for hook in ATTENTION_HOOKS:
        for layer, (value, reference) in enumerate(zip(cached(vlm, hook), eager_first_step)):
            if value.shape != reference.shape:
                raise CheckFailure(
                    f"lm.blocks.{layer}.{hook} cached during generate has shape {tuple(value.shape)}, "
                    f"the prompt pass has {tuple(reference.shape)}: a KV-cached decoding step overwrote "
                    "the first pass's activation",
                    where=f"layer {layer}",
                    hint=RUNTIME_HINT,
                )


@check
def cached_patterns_during_generate(vlm: HookedVLM) -> CheckResult:
    """Patterns cached around KV-cached ``generate`` are the prompt pass's: equal its eager attentions."""
    new_tokens = 3
    inputs = single_probe(vlm)
    with eager_attention(vlm), vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in ATTENTION_HOOKS]):
        generated = vlm.generate(
            inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # the decoding steps under test must actually run
            output_attentions=True,
            return_dict_in_generate=True,
        )
    steps = generated.attentions
    if steps is None or len(steps) != new_tokens or len(steps[0]) != vlm.lm_num_layers:
        count = "no" if steps is None else len(steps)
        raise CheckFailure(f"generate returned attentions for {count} steps, expected {new_tokens}")
    _assert_prompt_shapes(vlm, steps[0])
    worst = compare_layers(
        vlm,
        ((layer, pattern, steps[0][layer]) for layer, pattern in enumerate(cached(vlm, "attn.hook_pattern"))),
        kind="pattern",
        what="cached attn.hook_pattern around generate vs generate's first-step eager attentions",
        hint=RUNTIME_HINT,
    )
    return CheckResult(worst, f"prompt pass of {new_tokens}-token generate, {vlm.lm_num_layers} layers")
