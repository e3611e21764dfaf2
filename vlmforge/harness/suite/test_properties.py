"""Property tests: the adapter's recomputed attention and batching hold for *any* reasonable input.

Example counts are small by default so the suite stays fast; run longer with
``--hypothesis-profile=vlmforge-long``. Images are drawn over :data:`IMAGE_SIDES`; an image that gives
fewer image tokens than the family's measured ``min_image_tokens`` (a limit of the model itself, which
the ``image_min_tokens`` check verifies) is rejected and another one drawn.
"""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vlmforge.core.adapter import additive_mask
from vlmforge.harness.checks import compare_attention_to_eager, real_query_rows
from vlmforge.harness.checks.capabilities import mixed_size_batches_refused
from vlmforge.harness.compare import CheckFailure, assert_close, max_abs_difference
from vlmforge.harness.probes import IMAGE_SIDES, image_token_count, probe_image, visible_logits
from vlmforge.harness.tolerances import scaled, tolerance_for

DEFAULT_EXAMPLES = 4


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    """``default`` under hypothesis' default profile; the selected profile's count otherwise."""
    if settings.get_current_profile_name() == "default":
        return default
    return settings().max_examples


PROPERTY_SETTINGS = settings(
    max_examples=examples(),
    deadline=None,
    derandomize=True,  # the same examples on every run and every xdist worker
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

prompts = st.text(alphabet=string.ascii_letters + string.digits + " .,?!'", min_size=1, max_size=40).filter(
    lambda text: text.strip()
)
sides = st.integers(min_value=IMAGE_SIDES[0], max_value=IMAGE_SIDES[1])
modes = st.sampled_from(["RGB", "RGBA", "L"])


def _runnable(vlm, inputs) -> None:
    """Reject (hypothesis draws another) an image below the family's declared image-token floor."""
    assume(image_token_count(vlm, inputs) >= vlm.adapter.spec.min_image_tokens)


def _check_patterns(vlm, inputs) -> None:
    """Patterns match eager; every real query row sums to 1 and puts exactly 0 on every key its mask
    blocks (future keys under causal attention; a bidirectional image prefix may see ahead)."""
    _, recomputed = compare_attention_to_eager(vlm, inputs)
    tolerance = tolerance_for(vlm.dtype).pattern
    real_rows = real_query_rows(inputs)  # a fully padded query row attends uniformly: no signal
    for call, patterns in recomputed:
        layer = call.layer
        length = patterns.shape[-1]
        sums = patterns.float().sum(-1, keepdim=True)
        assert_close(
            sums.masked_fill(~real_rows, 1.0),
            torch.ones_like(sums),
            tolerance=tolerance * length,
            what="pattern row sum",
            axes=("batch", "head", "query", "key"),
            prefix=f"layer {layer}",
        )
        # The mask this layer received (None: causal, windowed per layer), as eager adds it.
        mask = additive_mask(call.attention_mask, patterns.float(), vlm.adapter.sliding_window(layer))
        blocked = (mask < 0).expand_as(patterns)
        leaked = patterns.float().masked_fill(~(blocked & real_rows), 0).abs().max()
        if float(leaked) != 0.0:
            raise CheckFailure(
                "attention to keys the mask blocks (future tokens, outside the window) is not exactly 0",
                max_diff=float(leaked),
                where=f"layer {layer}",
            )


@given(prompt=prompts, width=sides, height=sides, mode=modes)
@PROPERTY_SETTINGS
def test_property_patterns_match_eager(vlm, prompt, width, height, mode):
    """Any image size / aspect / mode and any prompt: patterns match eager, rows sum to 1, causal."""
    inputs = vlm.prepare_messages(prompt, probe_image(width, height, mode=mode))
    _runnable(vlm, inputs)
    _check_patterns(vlm, inputs)


@pytest.mark.requires_capability("supports_batching")
@pytest.mark.not_applicable.with_args(mixed_size_batches_refused)
@given(items=st.lists(st.tuples(prompts, sides, sides, modes), min_size=1, max_size=3))
@PROPERTY_SETTINGS
def test_property_batch_parity(vlm, items):
    """Any batch of 1-3 mixed-size items: each row equals its single run; batched patterns match eager."""
    texts = [prompt for prompt, *_ in items]
    images = [probe_image(w, h, seed=i, mode=m) for i, (_, w, h, m) in enumerate(items)]
    singles = [vlm.prepare_messages(text, image) for text, image in zip(texts, images)]
    for inputs in singles:  # every item also runs alone
        _runnable(vlm, inputs)
    batch = vlm.prepare_messages_batch(texts, images)
    _check_patterns(vlm, batch)
    batch_logits = visible_logits(vlm, vlm.forward(batch).logits)
    relative = tolerance_for(vlm.dtype).batch
    for row, inputs in enumerate(singles):
        single = visible_logits(vlm, vlm.forward(inputs).logits[0])
        difference = max_abs_difference(batch_logits[row, -single.shape[0] :], single)
        if difference.value > scaled(relative, single):
            raise CheckFailure(
                "batched logits differ from the single run",
                max_diff=difference.value,
                where=f"item {row} of {len(items)}, position {difference.index[0]}",
            )
