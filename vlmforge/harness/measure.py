"""Measure the three capability flags of a model, and its image-token floor, instead of trusting a
declaration.

The conformance harness compares these measurements with what the adapter declares; the
scaffolder uses them to fill in a new family's flags from a tiny random model of its architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmforge.core.errors import InputError
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.compare import CheckFailure, max_abs_difference
from vlmforge.harness.probes import (
    IMAGE_SIDES,
    MIXED_SIZES,
    PROBE_PROMPTS,
    image_token_count,
    probe_image,
    text_only_probe,
    visible_logits,
    vlm_probe_batch,
)
from vlmforge.harness.tolerances import scaled, tolerance_for


@dataclass(frozen=True)
class Measurement:
    """A measured capability (a flag) or limit (a count): its value and the evidence for it."""

    value: bool | int
    evidence: str
    max_diff: float | None = None


def image_token_runs(is_image: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of consecutive image positions in a 1-D bool mask."""
    runs: list[tuple[int, int]] = []
    for position in is_image.nonzero().flatten().tolist():
        if runs and runs[-1][0] + runs[-1][1] == position:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return runs


def measure_contiguous_image_tokens(vlm: HookedVLM) -> Measurement:
    """Whether one image's tokens form a single unbroken run in ``input_ids``."""
    inputs = vlm.prepare_messages(PROBE_PROMPTS[0], probe_image(56, 56))
    runs = image_token_runs(vlm.adapter.image_token_mask(inputs)[0])
    if not runs:
        raise CheckFailure(
            "the processed prompt contains no image token",
            hint="image_token_mask() / the spec's image_token source, "
            "and the chat template's image placeholder",
        )
    total = sum(length for _, length in runs)
    shown = ", ".join(f"{start}+{length}" for start, length in runs[:6]) + (" ..." if len(runs) > 6 else "")
    return Measurement(len(runs) == 1, f"{total} image tokens in {len(runs)} run(s) (start+length: {shown})")


def measure_mixed_size_batches(vlm: HookedVLM) -> Measurement:
    """Whether the processor puts images of different sizes into one batch (processor only, no forward).

    One batch holds an image of each of :data:`~vlmforge.harness.probes.MIXED_SIZES`. Each image alone
    must be accepted first: a processor that refuses a single image is broken, not unable to batch, so
    that error propagates instead of becoming a False measurement.
    """
    prompts = [PROBE_PROMPTS[i % len(PROBE_PROMPTS)] for i in range(len(MIXED_SIZES))]
    images = [probe_image(w, h, seed=i) for i, (w, h) in enumerate(MIXED_SIZES)]
    for prompt, image in zip(prompts, images):
        vlm.prompt_processor.prepare_inputs(prompt, image)
    sides = [side for size in MIXED_SIZES for side in size]
    ratio = max(max(size) / min(size) for size in MIXED_SIZES)
    what = f"{len(images)} images of {min(sides)}-{max(sides)} px sides, aspect ratios 1:{ratio:g} to "
    what += f"{ratio:g}:1"
    try:
        vlm.prompt_processor.prepare_inputs_batch(prompts, images)
    except InputError as error:
        # The processor's own first line (transformers appends suggestions that do not apply here).
        cause = str(error.__cause__ or error).strip().splitlines()[0]
        return Measurement(False, f"{what}: each accepted alone, refused in one batch ({cause})")
    return Measurement(True, f"{what}: accepted in one batch")


def measure_batching(vlm: HookedVLM, count: int = 2) -> Measurement:
    """Whether every item of a left-padded batch (different prompts, images) matches its single run.

    The images differ in size unless the spec declares that the processor batches one size only.

    Compares the logits at every real (non-padding) position by max-abs difference.
    """
    prompts, images = vlm_probe_batch(vlm, count)
    batch = vlm.prepare_messages_batch(prompts, images)
    # Masked columns (spec.logit_mask) would scale the tolerance to the dtype minimum: left out.
    batch_logits = visible_logits(vlm, vlm.forward(batch).logits)
    relative = tolerance_for(vlm.dtype).batch
    worst, where, parity = 0.0, "", True
    for row, (prompt, image) in enumerate(zip(prompts, images)):
        single_logits = visible_logits(vlm, vlm.forward(vlm.prepare_messages(prompt, image)).logits[0])
        length = single_logits.shape[0]
        difference = max_abs_difference(batch_logits[row, -length:], single_logits)
        parity &= difference.value <= scaled(relative, single_logits)
        if difference.value >= worst:
            worst = difference.value
            where = f"item {row}, position {difference.index[0]} of {length}, vocab {difference.index[1]}"
    sizes = ", ".join(f"{im.width}x{im.height}" for im in images)
    evidence = f"batch of {count} (images {sizes}) vs singles: max |logit diff| {worst:.3g} at {where}"
    return Measurement(parity, evidence, worst)


def measure_strict_residual_stream(vlm: HookedVLM) -> Measurement:
    """Whether ``hook_resid_post[i]`` is bit-equal to ``hook_resid_pre[i + 1]`` with an image present."""
    inputs = vlm.prepare_messages(PROBE_PROMPTS[0], probe_image(56, 56))
    with vlm.run_with_cache(["lm.blocks.*.hook_resid_pre", "lm.blocks.*.hook_resid_post"]):
        vlm.forward(inputs)
    cache = vlm.cache
    broken: list[str] = []
    worst = 0.0
    for layer in range(vlm.lm_num_layers - 1):
        post = cache[f"lm.blocks.{layer}.hook_resid_post"]
        pre = cache[f"lm.blocks.{layer + 1}.hook_resid_pre"]
        if not torch.equal(post, pre):
            difference = max_abs_difference(pre, post)
            worst = max(worst, difference.value)
            broken.append(
                f"{layer}->{layer + 1} (max |diff| {difference.value:.3g}, position {difference.index[1]})"
            )
    if broken:
        return Measurement(False, "residual modified between layers " + "; ".join(broken), worst)
    return Measurement(
        True, f"resid_post[i] == resid_pre[i+1] bit-exactly for all {vlm.lm_num_layers - 1} boundaries"
    )


def measure_min_image_tokens(vlm: HookedVLM, step: int = 8) -> Measurement:
    """The fewest image tokens one image may give before the model itself fails (1: no such limit).

    The smallest image of the property tests' side range (:data:`IMAGE_SIDES`) is run first: when it
    runs, there is no limit (1). When it fails, images over the range (every ``step`` px, all aspect
    ratios) are grouped by the number of image tokens the processor gives them, and the smallest image
    of each count is run, fewest tokens first: the value is the first count that runs. Non-square sizes
    matter: a strip can give fewer tokens than any square that runs (Mistral3: a 16x16 image is one
    merged token, which its image-feature split cannot take; a 16x40 image is two tokens and runs).

    Raises:
        CheckFailure: no image of the range runs at all (that is a broken model or adapter, no limit).
    """
    low, high = IMAGE_SIDES
    failed: list[str] = []

    def runs(width: int, height: int) -> bool:
        inputs = vlm.prepare_messages(PROBE_PROMPTS[0], probe_image(width, height))
        count = _tokens(image_token_count(vlm, inputs))
        try:
            vlm.forward(inputs)
        except Exception as error:  # the model's own failure on this image is what is measured
            failed.append(f"a {width}x{height} image ({count}) fails: {type(error).__name__}: {error}")
            return False
        failed.append(f"a {width}x{height} image ({count}) runs")
        return True

    if runs(low, low):
        return Measurement(1, f"{failed[-1]}, the smallest image of the {low}-{high} px range")
    sides = sorted({*range(low, high + 1, step), high})
    smallest: dict[int, tuple[int, int]] = {}  # image tokens -> the smallest (w, h) giving that many
    for width in sides:
        for height in sides:
            count = image_token_count(vlm, vlm.prepare_messages(PROBE_PROMPTS[0], probe_image(width, height)))
            best = smallest.get(count)
            if best is None or width * height < best[0] * best[1]:
                smallest[count] = (width, height)
    for count, (width, height) in sorted(smallest.items()):
        if (width, height) != (low, low) and runs(width, height):
            return Measurement(count, "; ".join(failed))
    raise CheckFailure(
        f"no {low}-{high} px image runs through the model: " + "; ".join(failed),
        hint="the forward itself fails: run vlm.forward on a probe image for the traceback",
    )


def _tokens(count: int) -> str:
    return f"{count} image token{'' if count == 1 else 's'}"


def measure_batched_generation(vlm: HookedVLM, new_tokens: int = 3) -> Measurement:
    """Whether greedy generation of a left-padded batch of 2 gives each item its single-generation logits.

    Compared step by step outside the masked columns (spec.logit_mask), each step within the batch
    tolerance. A genuine near-tie (the top two single logits closer than twice the tolerance) where the
    batch picks another token ends the comparison of that item there: the continuations may then differ.
    """
    prompts, images = vlm_probe_batch(vlm)
    batch = vlm.generate_batch(
        vlm.prepare_messages_batch(prompts, images), max_new_tokens=new_tokens, output_logits=True
    )
    relative = tolerance_for(vlm.dtype).batch
    worst, where = 0.0, "nowhere"
    for row, (prompt, image) in enumerate(zip(prompts, images)):
        single = vlm.generate(
            vlm.prepare_messages(prompt, image), max_new_tokens=new_tokens, output_logits=True
        )
        for step in range(new_tokens):
            single_logits = visible_logits(vlm, single.logits[step][0])
            batch_logits = visible_logits(vlm, batch.logits[step][row])
            tolerance = scaled(relative, single_logits)
            difference = max_abs_difference(batch_logits, single_logits)
            if difference.value > worst:
                worst, where = difference.value, f"item {row}, step {step}, vocab {difference.index[0]}"
            if difference.value > tolerance:
                evidence = (
                    f"batched generation diverges from single generation at item {row}, step {step}, "
                    f"vocab {difference.index[0]} (max |diff| {difference.value:.3g} > {tolerance:.3g})"
                )
                return Measurement(False, evidence, difference.value)
            if int(batch_logits.argmax()) != int(single_logits.argmax()):
                top2 = single_logits.float().topk(2).values
                if float(top2[0] - top2[1]) > 2 * tolerance:
                    evidence = f"batched generation picked another token at item {row}, step {step}"
                    return Measurement(False, evidence, difference.value)
                break  # a genuine near-tie: the continuations may legitimately differ from here on
    evidence = (
        f"{new_tokens} tokens x 2 items match their single generations (max |diff| {worst:.3g} at {where})"
    )
    return Measurement(True, evidence, worst)


def measure_requires_image(vlm: HookedVLM) -> Measurement:
    """Whether the model's forward refuses the probe's prompt without an image (its error is the evidence).

    Any error of the forward counts: the text-only probe is the family's own processor output, so a model
    that runs text-only prompts runs it.
    """
    try:
        vlm.forward(text_only_probe(vlm))
    except Exception as error:  # the model's own refusal, whatever its type
        return Measurement(True, f"forward without an image raises {type(error).__name__}: {error}")
    return Measurement(False, "forward runs the probe's prompt without an image")


def measure_capabilities(vlm: HookedVLM) -> dict[str, Measurement]:
    """All three capability flags, keyed like :class:`vlmforge.core.spec.Capabilities`."""
    return {
        "contiguous_image_tokens": measure_contiguous_image_tokens(vlm),
        "supports_batching": measure_batching(vlm),
        "strict_residual_stream": measure_strict_residual_stream(vlm),
    }
