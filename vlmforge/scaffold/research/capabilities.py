"""The three capability flags, whether the processor batches images of different sizes and the
image-token floor, *measured* on a tiny random model through an adapter of the researched spec."""

from __future__ import annotations

from typing import Any

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import FamilySpec
from vlmforge.harness.measure import (
    Measurement,
    measure_batched_generation,
    measure_capabilities,
    measure_min_image_tokens,
    measure_mixed_size_batches,
    measure_requires_image,
)
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["research_capabilities", "research_vlm", "unmeasured_reason"]

_QUESTIONS = {
    "contiguous_image_tokens": "Capability: contiguous image tokens",
    "supports_batching": "Capability: batching gives the same result as singles",
    "strict_residual_stream": "Capability: resid_post[i] == resid_pre[i+1]",
    # Measured before the flags (see _measure): the batching measurement batches the sizes this allows.
    "batches_mixed_image_sizes": "The processor batches images of different sizes",
    "requires_image": "The model's forward refuses a prompt without an image",
    # Measured where batches are supported at all (else batched generation is not checked).
    "generates_batches": "Batched greedy generation matches generating each item alone",
}
# Not a flag: a count, the unknown answer of which leaves the spec at its default (no limit).
_MIN_IMAGE_TOKENS = ("min_image_tokens", "Fewest image tokens of an image the model runs on")


def research_capabilities(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Measure the flags on ``tiny`` (a tiny model bundle) with an adapter built from the answers so far.

    Args:
        report: the research so far; its spec answers configure the throwaway adapter.
        tiny: the tiny model bundle (``.model``, ``.processor``), or None when it could not be built.
        tiny_error: why it could not be built.
        name: the family id, naming the throwaway adapter.
        measure: False leaves every flag ``unknown`` (the caller asked for no tiny model).
    """
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        # No slot without a tiny model: the flags then stay in the report only.
        _add_unknown(report, unmeasured, slotted=not measure or tiny is not None)
        return
    try:
        measured = _measure(report, tiny, name)
    except Exception as error:  # the measurement itself failed: report it, do not guess the flags
        _add_unknown(report, f"unknown: measuring failed ({type(error).__name__}: {error})", slotted=True)
        return
    for key, question in _QUESTIONS.items():
        measurement = measured[key]
        report.add(
            Answer(
                key,
                question,
                bool(measurement.value),
                f"tiny model: {measurement.evidence}",
                "measured",
                slot=key,
            )
        )
    key, question = _MIN_IMAGE_TOKENS
    floor = measured[key]
    report.add(Answer(key, question, int(floor.value), f"tiny model: {floor.evidence}", "measured", slot=key))


def _measure(report: ResearchReport, tiny: Any, name: str) -> dict[str, Measurement]:
    """The harness's measurements on ``tiny`` through an adapter of the researched spec.

    Whether images of different sizes batch is measured (processor only) and declared in the spec
    before the capability flags are: batching parity is then measured on a batch the processor takes.
    The image-token floor (``min_image_tokens``) is measured on single images.
    """
    with quiet():
        mixed = measure_mixed_size_batches(research_vlm(report, tiny, name))
        vlm = research_vlm(report, tiny, name, {"batches_mixed_image_sizes": mixed.value})
        capabilities = measure_capabilities(vlm)
        generation = (
            measure_batched_generation(vlm)
            if capabilities["supports_batching"].value
            else Measurement(True, "not measured: batches are not supported at all (supports_batching)")
        )
        return {
            **capabilities,
            "batches_mixed_image_sizes": mixed,
            "requires_image": measure_requires_image(vlm),
            "generates_batches": generation,
            _MIN_IMAGE_TOKENS[0]: measure_min_image_tokens(vlm),
        }


def unmeasured_reason(measure: bool, tiny: Any, tiny_error: str | None) -> str | None:
    """Why a measured answer stays ``unknown`` (the caller asked for no tiny model, or none could be
    built), as the report's evidence; ``None`` when it can be measured on ``tiny``."""
    if not measure:
        return "unknown: not measured (measure=False)"
    if tiny is None:
        return f"unknown: no tiny model to measure on ({tiny_error})"
    return None


def research_vlm(
    report: ResearchReport, tiny: Any, name: str, spec_changes: dict[str, Any] | None = None
) -> HookedVLM:
    """``tiny`` behind a throwaway adapter of the spec the answers so far describe, with ``spec_changes``
    applied (what harness measurements run on during research)."""
    spec = FamilySpec(
        name=name,
        checkpoints=(),
        tiny_reference=report.value("tiny_reference", report.model_type),
        **(report.spec_kwargs() | (spec_changes or {})),
    )
    adapter_class = type(f"{name}ResearchAdapter", (ModelAdapter,), {"spec": spec, "__module__": __name__})
    return HookedVLM(tiny.model, tiny.processor, adapter=adapter_class(tiny.model), model_name=f"tiny/{name}")


def _add_unknown(report: ResearchReport, reason: str, *, slotted: bool) -> None:
    for key, question in (*_QUESTIONS.items(), _MIN_IMAGE_TOKENS):
        report.add(Answer(key, question, None, reason, "unknown", slot=key if slotted else None))
