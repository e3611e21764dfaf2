"""One test per conformance check, parameterized over the models under test by the plugin."""

from __future__ import annotations

import pytest

from vlmforge.harness.checks import CHECKS, CheckResult


def run_check(name: str, vlm, request: pytest.FixtureRequest) -> CheckResult:
    result = CHECKS[name].function(vlm)
    if result.max_diff is not None:
        request.node.user_properties.append(("max_diff", result.max_diff))
    return result


def test_contract_accessors(vlm, request):
    run_check("contract_accessors", vlm, request)


def test_contract_shapes(vlm, request):
    run_check("contract_shapes", vlm, request)


def test_hook_shapes(vlm, request):
    run_check("hook_shapes", vlm, request)


def test_image_token_in_vocab(vlm, request):
    run_check("image_token_in_vocab", vlm, request)


def test_image_token_count(vlm, request):
    run_check("image_token_count", vlm, request)


def test_capability_contiguous_image_tokens(vlm, request):
    run_check("capability_contiguous_image_tokens", vlm, request)


def test_capability_supports_batching(vlm, request):
    run_check("capability_supports_batching", vlm, request)


def test_capability_strict_residual_stream(vlm, request):
    run_check("capability_strict_residual_stream", vlm, request)


def test_attention_vs_eager(vlm, request):
    run_check("attention_vs_eager", vlm, request)


@pytest.mark.requires_capability("supports_batching")
def test_attention_vs_eager_padded_batch(vlm, request):
    run_check("attention_vs_eager_padded_batch", vlm, request)


def test_scores_softmax_patterns(vlm, request):
    run_check("scores_softmax_patterns", vlm, request)


def test_resid_post_vs_hidden_states(vlm, request):
    run_check("resid_post_vs_hidden_states", vlm, request)


def test_head_out_sum(vlm, request):
    run_check("head_out_sum", vlm, request)


def test_mlp_decomposition(vlm, request):
    run_check("mlp_decomposition", vlm, request)


def test_logit_lens(vlm, request):
    run_check("logit_lens", vlm, request)


def test_cache_non_invasive(vlm, request):
    run_check("cache_non_invasive", vlm, request)


def test_outputs_finite(vlm, request):
    run_check("outputs_finite", vlm, request)


def test_generation_first_token(vlm, request):
    run_check("generation_first_token", vlm, request)


@pytest.mark.requires_capability("supports_batching")
def test_generation_batch_parity(vlm, request):
    run_check("generation_batch_parity", vlm, request)


def test_every_check_has_a_test():
    """Guard: a check registered in CHECKS without a test here would silently never run."""
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(CHECKS) <= tested, f"checks without a test: {sorted(set(CHECKS) - tested)}"
