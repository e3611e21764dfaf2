"""Generation checks: ``generate`` agrees with the forward pass, and batched generation with singles."""

from __future__ import annotations

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure, max_abs_difference
from vlmforge.harness.probes import probe_batch, single_probe
from vlmforge.harness.tolerances import scaled, tolerance_for


@check
def generation_first_token(vlm: HookedVLM) -> CheckResult:
    """The first greedily generated token is the argmax of the forward pass's last logits."""
    inputs = single_probe(vlm)
    expected = int(vlm.forward(inputs).logits[0, -1].argmax())
    generated = vlm.generate(inputs, max_new_tokens=1, do_sample=False).sequences
    length = inputs["input_ids"].shape[1]
    got = int(generated[0, length])
    if got != expected:
        raise CheckFailure(
            f"generate() produced token {got}, forward argmax is {expected}",
            hint="generation inputs (pixel_values, mm_token_type_ids) dropped by prepare_messages",
        )
    return CheckResult(detail=f"token {got}")


@check(requires="supports_batching")
def generation_batch_parity(vlm: HookedVLM) -> CheckResult:
    """Greedy batch generation of 2 equals generating each item alone (logits within tolerance)."""
    new_tokens = 3
    prompts, images = probe_batch(2)
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
            tolerance = scaled(relative, single_logits)
            difference = max_abs_difference(batch_logits, single_logits)
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
