"""Max-abs comparisons that say *where* two tensors differ, and the failure type checks raise."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.tolerances import scaled, tolerance_for

PATTERN_AXES = ("batch", "head", "query", "key")
STATE_AXES = ("batch", "position", "dim")


class CheckFailure(AssertionError):
    """A conformance check failed; carries the measured difference and where it occurred.

    Attributes:
        max_diff: the largest absolute difference measured (``None`` for non-numeric checks).
        where: a human-readable location (``"layer 3, head 5, query 17, key 2"``).
        hint: what to look at to fix it.
    """

    def __init__(self, message: str, *, max_diff: float | None = None, where: str = "", hint: str = ""):
        text = message
        if where:
            text += f" at {where}"
        if max_diff is not None:
            text += f" (max |diff| = {max_diff:.3g})"
        if hint:
            text += f". Look at: {hint}"
        super().__init__(text)
        self.max_diff = max_diff
        self.where = where
        self.hint = hint


@dataclass(frozen=True)
class Difference:
    """The max-abs difference of two tensors and the index where it is attained."""

    value: float
    index: tuple[int, ...]

    def describe(self, axes: Sequence[str]) -> str:
        return ", ".join(f"{axis} {i}" for axis, i in zip(axes, self.index))


def max_abs_difference(actual: torch.Tensor, expected: torch.Tensor) -> Difference:
    """Max-abs difference in fp32; NaN/Inf anywhere makes the difference ``inf`` at that index."""
    if actual.shape != expected.shape:
        raise CheckFailure(f"shape mismatch: got {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    diff = (actual.detach().float() - expected.detach().float()).abs()
    nonfinite = ~torch.isfinite(diff)
    if nonfinite.any():
        flat = int(nonfinite.flatten().nonzero()[0])
        return Difference(
            float("inf"), tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
        )
    if diff.numel() == 0:
        return Difference(0.0, ())
    flat = int(diff.argmax())
    return Difference(
        float(diff.flatten()[flat]),
        tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)),
    )


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    tolerance: float,
    what: str,
    axes: Sequence[str],
    prefix: str = "",
    hint: str = "",
    relative: bool = False,
) -> float:
    """Fail unless max |actual - expected| <= tolerance; return the difference.

    With ``relative=True`` the tolerance is scaled by ``max(1, max |expected|)`` (see
    :func:`vlmforge.harness.tolerances.scaled`).
    """
    if relative:
        tolerance = scaled(tolerance, expected)
    difference = max_abs_difference(actual, expected)
    if difference.value > tolerance:
        where = ", ".join(part for part in (prefix, difference.describe(axes)) if part)
        raise CheckFailure(
            f"{what} differs by more than {tolerance:g}", max_diff=difference.value, where=where, hint=hint
        )
    return difference.value


def compare_layers(
    vlm: HookedVLM,
    pairs: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    *,
    kind: str,
    what: str,
    hint: str,
    axes: Sequence[str] | None = None,
) -> float:
    """Compare ``(layer, actual, expected)`` pairs by max-abs difference; return the worst difference.

    ``kind`` picks the tolerance ("pattern": absolute, on [B, H, L, L]; "activation": relative to
    the reference, on [B, L, D]); ``axes`` names the dimensions in a failure (default: by ``kind``).
    Fails at the first layer over tolerance, naming it.
    """
    tolerance = getattr(tolerance_for(vlm.dtype), kind)
    axes = axes or (PATTERN_AXES if kind == "pattern" else STATE_AXES)
    differences = [
        assert_close(
            actual,
            expected,
            tolerance=tolerance,
            relative=kind != "pattern",
            what=what,
            axes=axes,
            prefix=f"layer {layer}",
            hint=hint,
        )
        for layer, actual, expected in pairs
    ]
    return max(differences, default=0.0)
