"""The image-token floor (``min_image_tokens``): measured on the model, checked, and honoured by the
property tests."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_vlm
from vlmforge import HookedVLM
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.measure import measure_min_image_tokens
from vlmforge.harness.mutants import with_spec
from vlmforge.harness.probes import IMAGE_SIDES, PROBE_PROMPTS, image_token_count, probe_image


def _declaring(family: str, floor: int) -> HookedVLM:
    base = tiny_vlm(family)
    adapter_class = with_spec(min_image_tokens=floor)(type(base.adapter))
    return HookedVLM(base.model, base.prompt_processor, adapter=adapter_class(base.model))


def test_a_model_that_takes_the_smallest_image_has_no_floor() -> None:
    measurement = measure_min_image_tokens(tiny_vlm("glm4v"))  # one image token, and it runs
    assert measurement.value == 1
    assert f"{IMAGE_SIDES[0]}x{IMAGE_SIDES[0]} image (1 image token) runs" in measurement.evidence


def test_mistral3_cannot_take_one_image_token_and_the_floor_says_so() -> None:
    """Transformers' Mistral3 squeezes the token axis of a lone merged image token away: one image token
    fails inside the model, two run (a strip, which no square in the range gives)."""
    vlm = tiny_vlm("mistral3")
    one = vlm.prepare_messages(PROBE_PROMPTS[0], probe_image(16, 16))
    assert image_token_count(vlm, one) == 1
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        vlm.forward(one)
    measurement = measure_min_image_tokens(vlm)
    assert measurement.value == 2
    assert "16x16 image (1 image token) fails: RuntimeError" in measurement.evidence
    assert measurement.evidence.endswith("(2 image tokens) runs")
    assert vlm.adapter.spec.min_image_tokens == 2  # the registered module declares what is measured


@pytest.mark.parametrize(
    ("family", "floor", "measured"), [("mistral3", 1, 2), ("llava", 5, 1), ("glm4v", 2, 1)]
)
def test_the_check_fails_on_a_wrong_declaration(family: str, floor: int, measured: int) -> None:
    with pytest.raises(CheckFailure, match=f"declared {floor} but measured {measured}"):
        CHECKS["image_min_tokens"].function(_declaring(family, floor))


def test_the_check_passes_on_the_measured_declaration() -> None:
    result = CHECKS["image_min_tokens"].function(tiny_vlm("mistral3"))
    assert "declared == measured == 2" in result.detail


def test_a_model_no_image_runs_on_is_a_failure_not_a_floor(monkeypatch) -> None:
    vlm = tiny_vlm("llava")

    def broken(*_args, **_kwargs):
        raise ValueError("broken forward")

    monkeypatch.setattr(vlm, "forward", broken)
    with pytest.raises(CheckFailure, match="no 16-112 px image runs"):
        measure_min_image_tokens(vlm)
