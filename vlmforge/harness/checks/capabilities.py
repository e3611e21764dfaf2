"""Capability checks: each declared capability flag equals what :mod:`vlmforge.harness.measure` measures."""

from __future__ import annotations

from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import CAPABILITY_NAMES
from vlmforge.harness.checks.registry import CHECKS, CheckResult, check, declared_equals_measured
from vlmforge.harness.measure import (
    Measurement,
    measure_batching,
    measure_contiguous_image_tokens,
    measure_mixed_size_batches,
    measure_strict_residual_stream,
)


def _compare_capability(vlm: HookedVLM, name: str, measurement: Measurement) -> CheckResult:
    return declared_equals_measured(vlm, f"capabilities.{name}", measurement)


@check
def capability_contiguous_image_tokens(vlm: HookedVLM) -> CheckResult:
    """Declared ``contiguous_image_tokens`` equals what the processed input ids show."""
    return _compare_capability(vlm, "contiguous_image_tokens", measure_contiguous_image_tokens(vlm))


@check
def capability_supports_batching(vlm: HookedVLM) -> CheckResult:
    """Declared ``supports_batching`` equals measured padded-batch parity."""
    return _compare_capability(vlm, "supports_batching", measure_batching(vlm))


@check
def capability_strict_residual_stream(vlm: HookedVLM) -> CheckResult:
    """Declared ``strict_residual_stream`` equals whether resid_post[i] is bit-equal to resid_pre[i+1]."""
    return _compare_capability(vlm, "strict_residual_stream", measure_strict_residual_stream(vlm))


@check
def processor_mixed_size_batches(vlm: HookedVLM) -> CheckResult:
    """Declared ``batches_mixed_image_sizes`` equals whether the processor batches mixed image sizes."""
    return declared_equals_measured(vlm, "batches_mixed_image_sizes", measure_mixed_size_batches(vlm))


def mixed_size_batches_refused(vlm: HookedVLM) -> str | None:
    """Why a check of mixed-size batches does not apply to ``vlm`` (its processor refuses them), or None.

    Measured, not read from the spec, so the reason carries the processor's own refusal; the declared
    flag is held to the same measurement by :func:`processor_mixed_size_batches`.
    """
    measurement = measure_mixed_size_batches(vlm)
    return (
        None
        if measurement.value
        else f"the processor cannot batch images of different sizes: {measurement.evidence}"
    )


# A capability added to the spec needs its check here, or it would go unverified.
assert {name.removeprefix("capability_") for name in CHECKS if name.startswith("capability_")} == set(
    CAPABILITY_NAMES
)
