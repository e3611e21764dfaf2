"""The check registry: one name per check, duplicates refused, and when a check does not run, why."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_vlm
from vlmforge import HookedVLM
from vlmforge.core.spec import CAPABILITY_NAMES
from vlmforge.harness import checks
from vlmforge.harness.checks import CHECKS, Check, CheckResult, check, register_check
from vlmforge.harness.mutants import PASS, SKIP, caught, run_checks, with_spec

SECTIONS = (
    checks.contract,
    checks.image_tokens,
    checks.capabilities,
    checks.attention,
    checks.cached_attention,
    checks.activations,
    checks.hook_values,
    checks.generation,
    checks.patching,
)


def variant(family: str, **spec_changes: object) -> HookedVLM:
    """The tiny ``family`` model with an adapter whose spec is changed (see ``with_spec``)."""
    base = tiny_vlm(family)
    adapter_class = with_spec(**spec_changes)(type(base.adapter))
    return HookedVLM(base.model, base.prompt_processor, adapter=adapter_class(base.model))


def test_every_builtin_check_is_the_function_of_its_name_in_its_section():
    builtin = {name: c for name, c in CHECKS.items() if c.function.__module__.startswith(checks.__name__)}
    assert len(builtin) == 36
    for name, registered in builtin.items():
        assert registered.function.__name__ == name
        [section] = [s for s in SECTIONS if s.__name__ == registered.function.__module__]
        assert getattr(section, name) is registered.function
        assert registered.summary, f"{name} has no docstring summary"


def test_every_capability_has_its_check_and_batching_checks_require_it():
    assert {f"capability_{name}" for name in CAPABILITY_NAMES} <= set(CHECKS)
    requiring = {name for name, c in CHECKS.items() if c.requires == "supports_batching"}
    assert requiring == {
        "attention_vs_eager_padded_batch",
        "cached_patterns_vs_eager_padded_batch",
        "generation_batch_parity",
    }


def test_a_second_function_with_a_taken_name_is_refused():
    before = dict(CHECKS)

    def logit_lens(vlm: HookedVLM) -> CheckResult:
        """Not the real logit lens."""
        return CheckResult()

    with pytest.raises(ValueError, match=r"'logit_lens' is already registered by .*activations\.logit_lens"):
        check(logit_lens)
    with pytest.raises(ValueError, match="already registered"):
        register_check(Check("head_out_sum", logit_lens))
    assert dict(CHECKS) == before


def test_registering_the_same_function_again_keeps_its_place():
    """What a re-imported module does: its checks are replaced, not duplicated or reordered."""
    order = list(CHECKS)
    register_check(CHECKS["logit_lens"])
    assert list(CHECKS) == order


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "my check"}, "not a Python identifier"),
        ({"name": "mine", "requires": "batching"}, "not a capability; known: contiguous_image_tokens"),
    ],
)
def test_a_malformed_record_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Check(function=lambda vlm: CheckResult(), **fields)


def test_a_check_on_a_capability_declared_false_is_skipped_with_the_reason():
    vlm = variant("llava", capabilities__supports_batching=False)
    reason = CHECKS["generation_batch_parity"].skip_reason(vlm)
    assert reason == f"{vlm.model_name} declares supports_batching=False"
    assert CHECKS["attention_vs_eager"].skip_reason(vlm) is None


def test_mlp_decomposition_is_not_applicable_without_a_gated_mlp():
    vlm = variant("llava", modules__gate_proj=None, modules__up_proj=None)
    assert CHECKS["mlp_decomposition"].skip_reason(vlm) == (
        "not applicable: not a gated MLP (the spec has no gate_proj, up_proj)"
    )
    assert CHECKS["mlp_decomposition"].skip_reason(tiny_vlm("llava")) is None


def test_run_checks_skips_what_does_not_apply_and_a_skip_catches_nothing():
    vlm = variant("qwen3_vl", capabilities__supports_batching=False)
    results = run_checks(vlm)
    assert results["generation_batch_parity"] == f"{SKIP}{vlm.model_name} declares supports_batching=False"
    # qwen3_vl batches fine, so declaring otherwise is caught by the capability check alone.
    assert caught(results) == ["capability_supports_batching"]
    assert results["attention_vs_eager"] == PASS
