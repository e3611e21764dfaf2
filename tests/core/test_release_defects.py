"""Families a supported transformers release cannot run: ``vlmforge.core.versions.BROKEN_FORWARDS``.

Most tests simulate the fact on the running release (so each runs on every release CI tests); one reads the
real fact, and on a release that runs llama4 really runs its tiny model on an image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from vlmforge import HookedVLM
from vlmforge.__main__ import family_names, family_table
from vlmforge.core.adapter import in_token_layout
from vlmforge.core.errors import UnsupportedArchitectureError, UnsupportedReleaseError
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.versions import BROKEN_FORWARDS, TRANSFORMERS_VERSION, BrokenForward, broken_forward
from vlmforge.harness.probes import single_probe
from vlmforge.tiny import build_tiny_model

LLAMA4 = "Llama4ForConditionalGeneration"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
HERE = ".".join(map(str, TRANSFORMERS_VERSION))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_here(monkeypatch: pytest.MonkeyPatch) -> BrokenForward:
    """llama4's forward declared broken on the running release."""
    fact = BrokenForward(
        releases=(TRANSFORMERS_VERSION,), defect="simulated defect D", works_on="9.98 or 9.99"
    )
    monkeypatch.setitem(BROKEN_FORWARDS, LLAMA4, fact)
    return fact


def test_the_llama4_fact_names_the_release_the_defect_and_the_working_releases() -> None:
    fact = BROKEN_FORWARDS[LLAMA4]
    assert fact.affects((5, 24)) and not fact.affects((5, 23)) and not fact.affects((5, 25))
    assert broken_forward(LLAMA4, (5, 23)) is None and broken_forward(LLAMA4, (5, 24)) is fact
    reason = fact.reason((5, 24))
    assert reason.startswith("not applicable on transformers 5.24: ")
    assert "image_outputs" in reason and "AttributeError" in reason and "5.23" in reason and "5.25" in reason
    assert fact.reason() == reason  # the release-independent statement names the one broken release


def test_loading_on_a_broken_release_is_a_clear_error(broken_here: BrokenForward) -> None:
    for name in ("tiny/llama4", "llama-4-scout", SCOUT):
        with pytest.raises(UnsupportedReleaseError) as raised:
            HookedVLM.from_pretrained(name) if name.startswith("tiny/") else ModelRegistry.resolve(name)
        message = str(raised.value)
        assert f"transformers {transformers.__version__}" in message and "'llama4'" in message
        assert "simulated defect D" in message and "9.98 or 9.99" in message
        assert (
            raised.value.reason
            == f"not applicable on transformers {HERE}: simulated defect D; it runs on "
            + ("transformers 9.98 or 9.99")
        )
    assert isinstance(raised.value, UnsupportedArchitectureError)  # what callers of resolve() already catch


def test_wrapping_a_model_of_a_broken_release_is_refused(broken_here: BrokenForward) -> None:
    tiny = build_tiny_model(SCOUT)
    with pytest.raises(UnsupportedReleaseError, match="simulated defect D"):
        HookedVLM(tiny.model, tiny.processor)


def test_listing_and_ci_matrix_leave_out_a_family_the_release_cannot_run(broken_here: BrokenForward) -> None:
    row = next(r for r in ModelRegistry.listing() if r["family"] == "llama4")
    assert row["available"] is False and row["why_unavailable"] == broken_here.reason(TRANSFORMERS_VERSION)
    assert "llama4" not in family_names() and SCOUT not in ModelRegistry.list_supported_models()


def test_llama4_on_the_running_release() -> None:
    """The real fact: refused where it applies (naming the defect); else the tiny model runs an image."""
    fact = broken_forward(LLAMA4)
    if fact is not None:
        with pytest.raises(UnsupportedReleaseError, match="image_outputs"):
            HookedVLM.from_pretrained("tiny/llama4")
        assert "llama4" not in family_names()
        return
    vlm = HookedVLM.from_pretrained("tiny/llama4", device="cpu")
    inputs = single_probe(vlm)
    start, end = vlm.get_image_token_range(inputs)
    assert end > start  # the image is in the prompt
    logits = vlm.forward(inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    assert "llama4" in family_names()


def test_generated_records_state_the_fact_whatever_release_renders_them() -> None:
    """FAMILIES.md and the README table read the same on every release: the fact is stated, not measured."""
    row = next(
        line for line in (ROOT / "FAMILIES.md").read_text().splitlines() if line.startswith("| `llama4` |")
    )
    assert f"every check: {BROKEN_FORWARDS[LLAMA4].reason()}" in row
    table_row = next(line for line in family_table().splitlines() if line.startswith("| `llama4` |"))
    assert "(broken in transformers 5.24)" in table_row


def test_a_flat_mlp_output_is_shown_in_its_input_token_layout() -> None:
    hidden = torch.randn(2, 3, 4)
    flat = torch.randn(6, 4)
    assert in_token_layout((flat, torch.randn(6, 2)), hidden).shape == (2, 3, 4)
    assert torch.equal(in_token_layout(flat, hidden).reshape(6, 4), flat)
    assert in_token_layout(hidden, hidden) is hidden  # already [B, L, D]
    assert in_token_layout(torch.randn(5, 4), hidden).shape == (5, 4)  # not this input's tokens: as is
