"""Image positions given by a processor output mask, for a family without a single image token id.

Most processors repeat one placeholder token per image feature, and the model finds the features' places by
that id. Kosmos-2's processor instead writes one *distinct* ordinary vocabulary id per image position and
returns a ``[B, L]`` 0/1 mask (``image_embeds_position_mask``) that the model's forward takes to place the
features. Where research found no image token id, this measures on the tiny model which processor output
is such a mask: shaped like ``input_ids``, only 0 and 1, accepted by the model's forward, and marking
exactly the positions the vision side writes. Exactly one must qualify; anything else stays unknown.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from vlmforge.harness.probes import single_probe, vision_written_positions
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["mask_candidates", "research_image_positions"]

_KEY = "image_position_mask"
_QUESTION = "Image positions: processor output masking them (no single image token id)"
# Outputs that are masks of something else by definition.
_NOT_IMAGE_MASKS = frozenset({"input_ids", "attention_mask"})


def research_image_positions(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Find the processor output marking the image positions, when no image token id was found.

    Args:
        report: the research so far; its spec answers configure the throwaway adapter.
        tiny: the tiny model bundle (``.model``, ``.processor``), or None when it could not be built.
        tiny_error: why it could not be built.
        name: the family id, naming the throwaway adapter.
        measure: False leaves the answer ``unknown`` when it is needed (the caller asked for no tiny model).
    """
    if report.value("image_token_attribute") or report.value("image_token"):
        evidence = "not needed: the image positions are the image token's"
        report.add(Answer(_KEY, _QUESTION, None, evidence, "default", slot="image_token"))
        return
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        report.add(Answer(_KEY, _QUESTION, None, unmeasured, "unknown", slot="image_token"))
        return
    try:
        vlm = research_vlm(report, tiny, name)
        with quiet():
            inputs = single_probe(vlm)
            written = vision_written_positions(vlm, inputs)
    except Exception as error:  # the measurement itself failed: report it, do not guess
        reason = f"unknown: measuring failed ({type(error).__name__}: {error})"
        report.add(Answer(_KEY, _QUESTION, None, reason, "unknown", slot="image_token"))
        return
    accepted = set(inspect.signature(type(tiny.model).forward).parameters)
    candidates = mask_candidates(inputs, accepted)
    matching = [key for key in candidates if torch.equal(inputs[key].bool(), written.to(inputs[key].device))]
    measured = (
        f"tiny model: the vision side writes {int(written.sum())} positions; processor outputs shaped like "
        f"input_ids, 0/1 and taken by {type(tiny.model).__name__}.forward: {candidates or 'none'}"
    )
    if len(matching) != 1:
        found = f"{matching} match" if matching else "none marks exactly those positions"
        report.add(
            Answer(_KEY, _QUESTION, None, f"unknown: {measured}; {found}", "unknown", slot="image_token")
        )
        return
    evidence = f"{measured}; {matching[0]!r} marks exactly the written positions"
    report.add(Answer(_KEY, _QUESTION, matching[0], evidence, "measured", slot="image_token"))
    # The image token answers were unknown; they are now settled as "none": the mask replaces them.
    for key in ("image_token_attribute", "image_token"):
        previous = report.answers.get(key)
        question = previous.question if previous is not None else key
        why = f"none needed: image positions come from the processor output {matching[0]!r}"
        earlier = f" (research found none: {previous.evidence})" if previous is not None else ""
        report.add(Answer(key, question, None, why + earlier, "default", slot="image_token"))


def mask_candidates(inputs: Any, accepted: set[str]) -> list[str]:
    """Processor outputs that may mark image positions: ``[B, L]`` like ``input_ids``, only 0 and 1, and a
    parameter of the model's forward (``accepted``), in the processor's order."""
    input_ids = inputs["input_ids"]
    candidates = []
    for key, value in inputs.items():
        if key in _NOT_IMAGE_MASKS or key not in accepted or not isinstance(value, torch.Tensor):
            continue
        if value.shape == input_ids.shape and bool(((value == 0) | (value == 1)).all()):
            candidates.append(key)
    return candidates
