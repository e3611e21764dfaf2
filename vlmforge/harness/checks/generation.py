"""Generation checks: ``generate`` agrees with the forward pass, and batched generation with singles."""

from __future__ import annotations

from typing import Any

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check, declared_equals_measured
from vlmforge.harness.compare import CheckFailure, max_abs_difference
from vlmforge.harness.measure import measure_batched_generation, measure_requires_image
from vlmforge.harness.probes import other_image_probe, single_probe, text_only_probe, visible_logits
from vlmforge.harness.tolerances import scaled, tolerance_for

__all__ = ["text_only_probe"]  # re-exported: the control probe generation_first_step_logits runs


def _control_probe(vlm: HookedVLM) -> Any:
    """The image-free control: the text-only prompt, or another image where the model needs one."""
    return other_image_probe(vlm) if vlm.adapter.spec.requires_image else text_only_probe(vlm)


@check
def generation_first_step_logits(vlm: HookedVLM) -> CheckResult:
    """``generate``'s first-step logits equal the forward pass's last-position logits, image included."""
    inputs = single_probe(vlm)
    # Masked columns (spec.logit_mask) are the dtype minimum in every run: compared on the others.
    expected = visible_logits(vlm, vlm.forward(inputs).logits[:, -1])
    tolerance = scaled(tolerance_for(vlm.dtype).activation, expected)
    # The control: the comparison is only evidence that generate() sees the image if dropping the image
    # (changing it, for a model that needs one) moves these logits by more than the tolerance (the greedy
    # token alone often does not change).
    without_image = max_abs_difference(
        visible_logits(vlm, vlm.forward(_control_probe(vlm)).logits[:, -1]), expected
    )
    if without_image.value <= tolerance:
        raise CheckFailure(
            "the comparison cannot tell image from no image: the control prompt's ("
            + ("the image's negative" if vlm.adapter.spec.requires_image else "text only")
            + f") last-position logits are within the tolerance {tolerance:.3g} of the with-image ones",
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
    """Greedy batch generation of 2 equals generating each item alone (logits within tolerance), as the
    spec's ``generates_batches`` declares; where it declares False (Kosmos-2: the model's own positions
    count the left padding once the prompt is cached) the divergence is what must be measured."""
    measurement = measure_batched_generation(vlm)
    if vlm.adapter.spec.generates_batches and not measurement.value:
        raise CheckFailure(
            measurement.evidence,
            max_diff=measurement.max_diff,
            hint="padding side / position ids / mask of batched inputs (or, where the model's own batched "
            "generation diverges, declare generates_batches=False)",
        )
    return declared_equals_measured(vlm, "generates_batches", measurement)


@check
def model_requires_image(vlm: HookedVLM) -> CheckResult:
    """Declared ``requires_image`` equals whether the model's forward refuses a prompt without an image."""
    return declared_equals_measured(vlm, "requires_image", measure_requires_image(vlm))
