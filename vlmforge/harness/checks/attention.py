"""Attention checks: the adapter's recomputed scores and patterns equal what eager attention computes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from vlmforge.core.adapter import additive_mask
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, compare_layers
from vlmforge.harness.probes import (
    AttentionCall,
    attentions_by_layer,
    not_recomputed,
    run_eager_with_attention_inputs,
    single_probe,
    vlm_probe_batch,
)


def real_query_rows(inputs: Any) -> torch.Tensor:
    """[B, 1, L, 1] bool: True for query positions that are real tokens (not left padding)."""
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(inputs["input_ids"])
    return mask.bool()[:, None, :, None]


def compare_attention_to_eager(
    vlm: HookedVLM, inputs: Any
) -> tuple[float, list[tuple[AttentionCall, torch.Tensor]]]:
    """Recomputed patterns vs eager ``output_attentions``, every layer and head, by max-abs difference.

    Returns the worst difference and, per softmax-attention layer, its recorded attention call (the
    layer's real inputs, mask included) with the recomputed patterns [B, H, L, L]. Rows of padding
    queries are excluded: they attend to nothing real, feed no real position, and in half precision
    eager's ``scores + finfo.min`` overflows to -inf there, so they carry no signal.
    """
    outputs, calls = run_eager_with_attention_inputs(vlm, inputs)
    if outputs.attentions is None:
        raise CheckFailure(
            "the model returned no per-layer attentions under eager with output_attentions=True"
        )
    # Keyed by layer: a cross-attention decoder also reports its cross-attention layers' weights (over
    # the image features), which have no recorded call and no recomputation to compare with.
    eager_by_layer = attentions_by_layer(vlm, outputs.attentions)
    if sorted(eager_by_layer) != [call.layer for call in calls]:
        raise CheckFailure(
            f"eager reported attentions for layers {sorted(eager_by_layer)} but the attention modules of "
            f"layers {[call.layer for call in calls]} ran"
        )
    padding = ~real_query_rows(inputs)
    recomputed = [
        vlm.adapter.compute_attention_patterns(
            call.hidden_states, call.layer, call.attention_mask, call.position_embeddings
        )
        for call in calls
    ]
    worst = compare_layers(
        vlm,
        (
            (call.layer, patterns.masked_fill(padding, 0), eager_by_layer[call.layer].masked_fill(padding, 0))
            for call, patterns in zip(calls, recomputed, strict=True)
        ),
        kind="pattern",
        what="recomputed attention pattern vs eager output_attentions",
        hint="the rotary function, q/k norms, kv-head grouping, scaling and mask in the attention recipe",
    )
    return worst, list(zip(calls, recomputed, strict=True))


@check
def attention_vs_eager(vlm: HookedVLM) -> CheckResult:
    """Recomputed patterns equal eager ``output_attentions`` per layer and head (single input)."""
    worst, _ = compare_attention_to_eager(vlm, single_probe(vlm))
    detail = f"{vlm.lm_num_layers} layers x {vlm.adapter.lm_num_heads} heads"
    return CheckResult(worst, _with_uncovered(vlm, detail))


def _with_uncovered(vlm: HookedVLM, detail: str) -> str:
    """``detail`` plus the layers the attention comparison did not cover, and why (if any)."""
    return "; ".join(part for part in (detail, not_recomputed(vlm)) if part)


@check(requires="supports_batching")
def attention_vs_eager_padded_batch(vlm: HookedVLM) -> CheckResult:
    """Recomputed patterns equal eager ``output_attentions`` on a left-padded batch."""
    prompts, images = vlm_probe_batch(vlm)
    worst, _ = compare_attention_to_eager(vlm, vlm.prepare_messages_batch(prompts, images))
    return CheckResult(worst, _with_uncovered(vlm, "left-padded batch of 2"))


@check
def scores_softmax_patterns(vlm: HookedVLM) -> CheckResult:
    """softmax(compute_attention_scores + mask) == compute_attention_patterns."""
    prompts, images = vlm_probe_batch(vlm)
    _, calls = run_eager_with_attention_inputs(vlm, vlm.prepare_messages_batch(prompts, images))

    def pairs() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for call in calls:
            args = (call.hidden_states, call.layer, call.attention_mask, call.position_embeddings)
            scores = vlm.adapter.compute_attention_scores(*args)
            patterns = vlm.adapter.compute_attention_patterns(*args)
            mask = additive_mask(call.attention_mask, scores, vlm.adapter.sliding_window(call.layer))
            # Rounded to the model dtype as eager rounds its weights, so the comparison is exact.
            yield call.layer, patterns, torch.softmax(scores.float() + mask, dim=-1).to(patterns.dtype)

    worst = compare_layers(
        vlm,
        pairs(),
        kind="pattern",
        what="softmax(scores + mask) vs patterns",
        hint="compute_attention_patterns must use the scores",
    )
    return CheckResult(worst, _with_uncovered(vlm, ""))
