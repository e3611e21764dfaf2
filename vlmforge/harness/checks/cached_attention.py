"""Cached attention checks: ``attn.hook_pattern`` / ``attn.hook_scores`` as a user reads them.

:mod:`.attention` calls the adapter's ``compute_attention_*`` directly on captured inputs; these
checks go through the runtime instead (``run_with_cache`` around ``forward`` or ``generate``), so
they also prove that the runtime hands the recomputation the layer's own ``position_embeddings``
(M-RoPE) and ``attention_mask`` (padding), and that KV-cached decoding steps leave the cached
prompt pass alone. The hooks run under the model's own attention implementation (SDPA) and under
eager; the reference is transformers' eager attention on exactly the inputs each layer received.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from vlmforge.core.adapter import additive_mask
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.attention import real_query_rows
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, compare_layers
from vlmforge.harness.probes import (
    AttentionCall,
    attentions_by_layer,
    eager_weights,
    recorded_attention_calls,
    run_eager_with_attention_inputs,
    single_probe,
    vlm_probe_batch,
)

ATTENTION_HOOKS = ("attn.hook_pattern", "attn.hook_scores")
#: Where to look when a cached pattern disagrees with eager: the runtime's computed-hook plumbing.
RUNTIME_HINT = (
    "HookedVLM's recomputed attention hooks: they must pass the layer's own position_embeddings "
    "and attention_mask to compute_attention_*, and run on full passes only"
)


def implementations_under_test(vlm: HookedVLM) -> tuple[str, ...]:
    """The model's own attention implementation (SDPA: ``None`` or boolean masks), then eager (float masks).

    Hooks must be right under the implementation users run (the loaded one) and under eager, which
    every ``output_attentions`` call switches to; each hands the layer its mask in another form.
    """
    loaded = getattr(vlm.adapter.lm_config, "_attn_implementation", None) or "eager"
    return tuple(dict.fromkeys((loaded, "eager")))


@contextlib.contextmanager
def hooked_pass(vlm: HookedVLM, implementation: str) -> Iterator[list[AttentionCall]]:
    """The block runs under ``implementation`` caching patterns and scores; yields the attention calls."""
    with (
        vlm.attention_implementation(implementation),
        recorded_attention_calls(vlm) as calls,
        vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in ATTENTION_HOOKS]),
    ):
        yield calls


def cached(vlm: HookedVLM, hook_type: str) -> list[torch.Tensor]:
    """The cached activation of ``hook_type`` for every layer, failing clearly when one is missing."""
    names = [f"lm.blocks.{layer}.{hook_type}" for layer in vlm.hook_layers(hook_type)]
    missing = [name for name in names if name not in vlm.cache]
    if missing:
        raise CheckFailure(f"run_with_cache cached nothing for {', '.join(missing)}", hint=RUNTIME_HINT)
    return [vlm.cache[name] for name in names]


def compare_to_eager_on_same_inputs(
    vlm: HookedVLM,
    implementation: str,
    calls: list[AttentionCall],
    reference_calls: list[AttentionCall],
    padding: torch.Tensor | None = None,
) -> float:
    """Cached patterns and scores of a pass under ``implementation`` vs eager weights on its inputs.

    ``calls`` are that pass's attention inputs, ``reference_calls`` an eager pass's (for the additive
    mask eager uses). Scores are compared through softmax(scores + mask), rounded to the model dtype
    as eager rounds its weights. ``padding`` ([B, 1, L, 1], True on padding queries) rows are excluded.
    """
    patterns, scores = cached(vlm, "attn.hook_pattern"), cached(vlm, "attn.hook_scores")
    references = [eager_weights(vlm, call, ref.attention_mask) for call, ref in zip(calls, reference_calls)]

    def hide(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if padding is None else tensor.masked_fill(padding, 0)

    def from_scores() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for call, layer_scores, reference in zip(reference_calls, scores, references):
            mask = additive_mask(call.attention_mask, layer_scores, vlm.adapter.sliding_window(call.layer))
            softmax = torch.softmax(layer_scores.float() + mask, dim=-1)
            yield call.layer, hide(softmax.to(reference.dtype)), hide(reference)

    return max(
        compare_layers(
            vlm,
            (
                (call.layer, hide(pattern), hide(ref))
                for call, pattern, ref in zip(calls, patterns, references)
            ),
            kind="pattern",
            what=f"cached attn.hook_pattern ({implementation} pass) vs eager attention on the same inputs",
            hint=RUNTIME_HINT,
        ),
        compare_layers(
            vlm,
            from_scores(),
            kind="pattern",
            what=f"softmax(cached attn.hook_scores ({implementation} pass) + mask) vs eager attention",
            hint=RUNTIME_HINT,
        ),
    )


def compare_cached_attention(vlm: HookedVLM, inputs: Any) -> float:
    """Patterns and scores cached by ``run_with_cache`` around ``forward`` vs eager attention.

    The hooks run under each of :func:`implementations_under_test`; the reference is transformers'
    eager attention re-run on exactly the inputs each layer received in that pass
    (:func:`~vlmforge.harness.probes.eager_weights`). Rows of padding queries are excluded, as in
    :func:`~vlmforge.harness.checks.attention.compare_attention_to_eager`.
    """
    outputs, reference_calls = run_eager_with_attention_inputs(vlm, inputs)
    attentions_by_layer(vlm, outputs.attentions)  # fails clearly when eager returned no weights
    padding = ~real_query_rows(inputs)
    worst = 0.0
    for implementation in implementations_under_test(vlm):
        with hooked_pass(vlm, implementation) as calls:
            vlm.forward(inputs)
        difference = compare_to_eager_on_same_inputs(vlm, implementation, calls, reference_calls, padding)
        worst = max(worst, difference)
    return worst


@check
def cached_patterns_vs_eager(vlm: HookedVLM) -> CheckResult:
    """Patterns and scores read from ``run_with_cache`` equal eager ``output_attentions`` (single input)."""
    worst = compare_cached_attention(vlm, single_probe(vlm))
    return CheckResult(worst, f"{vlm.lm_num_layers} layers x {vlm.adapter.lm_num_heads} heads")


@check(requires="supports_batching")
def cached_patterns_vs_eager_padded_batch(vlm: HookedVLM) -> CheckResult:
    """Patterns and scores read from ``run_with_cache`` equal eager ``output_attentions`` (padded batch)."""
    prompts, images = vlm_probe_batch(vlm)
    worst = compare_cached_attention(vlm, vlm.prepare_messages_batch(prompts, images))
    return CheckResult(worst, "left-padded batch of 2")


def _assert_prompt_shapes(vlm: HookedVLM, eager_first_step: dict[int, torch.Tensor]) -> None:
    """Every cached pattern / score has the prompt pass's shape: no decoding step overwrote it."""
    for hook in ATTENTION_HOOKS:
        for layer, value in zip(vlm.hook_layers(hook), cached(vlm, hook), strict=True):
            reference = eager_first_step[layer]
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
    """Patterns cached around KV-cached ``generate`` are the prompt pass's: equal eager attention on it."""
    new_tokens = 3
    inputs = single_probe(vlm)
    # The decoding steps under test must actually run: min_new_tokens.
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "return_dict_in_generate": True}
    with recorded_attention_calls(vlm) as reference_calls:
        reference = vlm.generate(inputs, output_attentions=True, **options)  # switches to eager itself
    steps = reference.attentions
    if steps is None or len(steps) != new_tokens:
        count = "no" if steps is None else len(steps)
        raise CheckFailure(f"generate returned attentions for {count} steps, expected {new_tokens}")
    first_step = attentions_by_layer(vlm, steps[0])
    worst = 0.0
    for implementation in implementations_under_test(vlm):
        with hooked_pass(vlm, implementation) as calls:
            vlm.generate(inputs, **options)
        _assert_prompt_shapes(vlm, first_step)
        worst = max(worst, compare_to_eager_on_same_inputs(vlm, implementation, calls, reference_calls))
    implementations = " and ".join(implementations_under_test(vlm))
    detail = f"prompt pass of {new_tokens}-token generate under {implementations}, {vlm.lm_num_layers} layers"
    return CheckResult(worst, detail)
