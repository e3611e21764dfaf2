"""Generation checks: ``generate`` agrees with the forward pass, and batched generation with singles."""

from __future__ import annotations

from typing import Any

import torch

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, max_abs_difference
from vlmforge.harness.probes import PROBE_PROMPTS, single_probe, visible_logits, vlm_probe_batch
from vlmforge.harness.tolerances import scaled, tolerance_for


def text_only_probe(vlm: HookedVLM) -> Any:
    """The single probe's question without its image: chat-templated text only, no pixel inputs.

    Built through the family's own processor (so the template and any text-side inputs such as
    ``mm_token_type_ids`` are what the model expects), with no image tokens and no ``pixel_values``.
    """
    messages = [{"role": "user", "content": [{"type": "text", "text": PROBE_PROMPTS[1]}]}]
    text = vlm.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        inputs = vlm.processor(text=[text], return_tensors="pt")
    except (ValueError, TypeError):
        # Some processors refuse a prompt without images (GOT-OCR2): its tokenizer gives the same text ids.
        inputs = vlm.processor.tokenizer([text], return_tensors="pt")
    return {key: value.to(vlm.device) for key, value in inputs.items() if isinstance(value, torch.Tensor)}


@check
def generation_first_step_logits(vlm: HookedVLM) -> CheckResult:
    """``generate``'s first-step logits equal the forward pass's last-position logits, image included."""
    inputs = single_probe(vlm)
    # Masked columns (spec.logit_mask) are the dtype minimum in every run: compared on the others.
    expected = visible_logits(vlm, vlm.forward(inputs).logits[:, -1])
    tolerance = scaled(tolerance_for(vlm.dtype).activation, expected)
    # The control: the comparison is only evidence that generate() sees the image if dropping the image
    # moves these logits by more than the tolerance (the greedy token alone often does not change).
    without_image = max_abs_difference(
        visible_logits(vlm, vlm.forward(text_only_probe(vlm)).logits[:, -1]), expected
    )
    if without_image.value <= tolerance:
        raise CheckFailure(
            "the comparison cannot tell image from no image: the text-only prompt's last-position "
            f"logits are within the tolerance {tolerance:.3g} of the with-image ones",
            max_diff=without_image.value,
            hint="the probe image / the vision tower's effect on the language model",
        )
    logits = vlm.generate(inputs, max_new_tokens=1, do_sample=False, output_logits=True).logits
    if not logits:
        raise CheckFailure("generate(output_logits=True) returned no logits", hint="HookedVLM.generate")
    difference = max_abs_difference(visible_logits(vlm, logits[0]), expected)
    if difference.value > tolerance:
        raise CheckFailure(
            f"generate()'s first-step logits differ from forward's last-position logits by more than "
            f"{tolerance:.3g}",
            max_diff=difference.value,
            where=difference.describe(("batch", "vocab")),
            hint="generation inputs (pixel_values, image_grid_thw, mm_token_type_ids) dropped or altered "
            "between prepare_messages and generate",
        )
    return CheckResult(
        difference.value,
        f"tolerance {tolerance:.3g}; without the image these logits move by {without_image.value:.3g}",
    )


@check(requires="supports_batching")
def generation_batch_parity(vlm: HookedVLM) -> CheckResult:
    """Greedy batch generation of 2 equals generating each item alone (logits within tolerance)."""
    new_tokens = 3
    prompts, images = vlm_probe_batch(vlm)
    batch = vlm.generate_batch(
        vlm.prepare_messages_batch(prompts, images), max_new_tokens=new_tokens, output_logits=True
    )
    relative = tolerance_for(vlm.dtype).batch
    worst = 0.0
    for row, (prompt, image) in enumerate(zip(prompts, images)):
        single = vlm.generate(
            vlm.prepare_messages(prompt, image), max_new_tokens=new_tokens, output_logits=True
        )
        for step in range(new_tokens):
            single_logits, batch_logits = single.logits[step][0], batch.logits[step][row]
            # Compared outside the masked columns (spec.logit_mask); the tokens picked are the model's.
            tolerance = scaled(relative, visible_logits(vlm, single_logits))
            difference = max_abs_difference(
                visible_logits(vlm, batch_logits), visible_logits(vlm, single_logits)
            )
            worst = max(worst, difference.value)
            if difference.value > tolerance:
                raise CheckFailure(
                    "batched generation diverges from single generation",
                    max_diff=difference.value,
                    where=f"item {row}, step {step}, vocab {difference.index[0]}",
                    hint="padding side / position ids / mask of batched inputs",
                )
            if int(batch_logits.argmax()) != int(single_logits.argmax()):
                top2 = single_logits.float().topk(2).values
                if float(top2[0] - top2[1]) > 2 * tolerance:
                    raise CheckFailure(f"batched generation picked another token at item {row}, step {step}")
                break  # a genuine near-tie: the continuations may legitimately differ from here on
    return CheckResult(worst, f"{new_tokens} tokens x 2 items")
