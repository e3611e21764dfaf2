"""The hook-value and first-step generation checks: they pass on every seed family, fail saying where, and
skip with a reason where the family has no such module."""

from __future__ import annotations

import pytest

from tests.conftest import SEED_FAMILIES
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import CHECKS, generation
from vlmforge.harness.mutants import MUTANTS, mutant_vlm, with_spec
from vlmforge.harness.probes import single_probe

NEW_CHECKS = (
    "hook_values_residual",
    "hook_values_attention_in",
    "hook_values_attention",
    "hook_values_mlp_in",
    "hook_values_mlp_out",
    "hook_values_mlp_gate_up",
    "generation_first_step_logits",
)


def _mutant(name: str, tiny) -> HookedVLM:
    mutant = next(m for m in MUTANTS if m.name == name)
    return mutant_vlm(mutant, tiny(mutant.family))


def _failure(check: str, vlm: HookedVLM) -> str:
    with pytest.raises(AssertionError) as error:
        CHECKS[check].function(vlm)
    return str(error.value)


def test_checks_are_registered_in_matrix_order():
    names = list(CHECKS)
    assert "generation_first_token" not in names
    positions = [names.index(name) for name in NEW_CHECKS]
    assert positions[:-1] == sorted(positions[:-1])


@pytest.mark.parametrize("family", SEED_FAMILIES)
@pytest.mark.parametrize("name", NEW_CHECKS)
def test_check_passes_on_seed_family(name, family, tiny):
    vlm = tiny(family)
    assert CHECKS[name].skip_reason(vlm) is None
    result = CHECKS[name].function(vlm)
    assert result.max_diff is not None and result.max_diff <= 1e-4, result


def test_residual_check_compares_text_positions_only_under_deepstack(tiny):
    # Qwen3-VL adds deepstack features at the image positions between layers: the hidden_states reference
    # is restricted to the text positions there, while strict families are compared everywhere.
    assert "text positions" in CHECKS["hook_values_residual"].function(tiny("qwen3_vl")).detail
    assert "all positions" in CHECKS["hook_values_residual"].function(tiny("llava")).detail


def test_scrambled_heads_fail_naming_layer_position_head_and_difference(tiny):
    message = _failure("hook_values_attention", _mutant("qkv_heads_scrambled", tiny))
    assert "attn.hook_q vs q_proj(attn.hook_in)" in message
    for part in ("layer 0", "position", "head", "dim", "max |diff|", "Look at"):
        assert part in message, message


def test_hook_in_before_norm_fails_naming_the_norm(tiny):
    message = _failure("hook_values_attention_in", _mutant("hook_in_before_input_norm", tiny))
    assert "attn.hook_in vs input_norm(hook_resid_pre)" in message
    assert "layer 0" in message and "position" in message and "max |diff|" in message


def test_resid_pre_reading_the_output_fails_on_deepstack_family(tiny):
    message = _failure("hook_values_residual", _mutant("resid_pre_reads_output", tiny))
    assert "hook_resid_pre vs" in message and "layer 0" in message and "position" in message


@pytest.mark.parametrize(
    ("mutant", "check", "what"),
    [
        ("mlp_norm_is_input_norm", "hook_values_mlp_in", "mlp.hook_in vs the MLP norm's output"),
        ("mlp_pre_reads_up_proj", "hook_values_mlp_gate_up", "mlp.hook_pre vs gate_proj(mlp.hook_in)"),
        ("mlp_out_reads_resid_post", "hook_values_mlp_out", "mlp.hook_out vs mlp(mlp.hook_in)"),
    ],
)
def test_mlp_hook_bugs_fail_naming_the_reference(mutant, check, what, tiny):
    message = _failure(check, _mutant(mutant, tiny))
    assert what in message and "layer 0" in message and "max |diff|" in message, message


def test_generate_dropping_the_image_fails_with_the_logit_difference(tiny):
    message = _failure("generation_first_step_logits", _mutant("generate_drops_image", tiny))
    assert "first-step logits differ from forward's last-position logits" in message
    assert "vocab" in message and "max |diff|" in message


def test_generation_control_fails_when_the_image_makes_no_difference(tiny, monkeypatch):
    # A "text-only" control that still carries the image: the comparison could not see a dropped image.
    monkeypatch.setattr(generation, "text_only_probe", single_probe)
    message = _failure("generation_first_step_logits", tiny("llava"))
    assert "cannot tell image from no image" in message


def test_text_only_probe_has_no_image(tiny):
    vlm = tiny("qwen3_vl")
    inputs = generation.text_only_probe(vlm)
    assert "pixel_values" not in inputs
    assert not (inputs["input_ids"] == vlm.adapter.get_image_token_id()).any()


@pytest.mark.parametrize(
    ("check", "field", "reason"),
    [
        ("hook_values_attention_in", "modules__input_norm", "declares no input_norm"),
        ("hook_values_mlp_in", "modules__mlp_norm", "declares no mlp_norm"),
        ("hook_values_mlp_gate_up", "modules__gate_proj", "not a gated MLP"),
    ],
)
def test_missing_module_is_a_skip_with_reason(check, field, reason, tiny):
    base = tiny("llava")
    adapter_class = with_spec(**{field: None})(ModelRegistry.adapters()["llava"])
    vlm = HookedVLM(base.model, base.prompt_processor, adapter=adapter_class(base.model))
    skip = CHECKS[check].skip_reason(vlm)
    assert skip is not None and reason in skip, skip
