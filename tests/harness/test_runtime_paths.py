"""The runtime's own paths are checked: cached attention as read from ``run_with_cache``, and patching.

The checks in :mod:`vlmforge.harness.checks.cached_attention` and :mod:`~vlmforge.harness.checks.patching`
pass on every seed family, say where they fail, and catch runtime bugs that the adapter-level
attention checks cannot see.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SEED_FAMILIES
from vlmforge.core.hooks import HookPoint
from vlmforge.core.runtime import HookedVLM, HookFunction
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.mutants import MUTANTS, mutant_vlm
from vlmforge.harness.probes import single_probe

RUNTIME_PATH_CHECKS = (
    "cached_patterns_vs_eager",
    "cached_patterns_vs_eager_padded_batch",
    "cached_patterns_during_generate",
    "patching_layer_locality",
    "patching_identity_and_none",
    "patching_wildcard",
)


@pytest.mark.parametrize("name", RUNTIME_PATH_CHECKS)
@pytest.mark.parametrize("family", SEED_FAMILIES)
def test_runtime_path_check_passes_on_seed_family(tiny, family, name):
    vlm = tiny(family)
    check = CHECKS[name]
    if (reason := check.skip_reason(vlm)) is not None:
        pytest.skip(reason)
    result = check.function(vlm)
    assert result.max_diff is None or result.max_diff <= 1e-5, result  # fp32: bit-exact in practice


def failure_message(vlm: HookedVLM, check_name: str) -> str:
    with pytest.raises(AssertionError) as error:
        CHECKS[check_name].function(vlm)
    return str(error.value)


@pytest.mark.parametrize(
    ("mutant_name", "check_name", "parts"),
    [
        ("cached_pattern_1d_positions", "cached_patterns_vs_eager", ("layer", "head", "query", "key")),
        ("cached_pattern_1d_positions", "cached_patterns_during_generate", ("layer", "head", "query", "key")),
        ("cached_pattern_without_padding_mask", "cached_patterns_vs_eager_padded_batch", ("batch", "head")),
        ("patch_next_layer", "patching_layer_locality", ("layer", "position", "dim")),
    ],
)
def test_failure_names_layer_position_and_difference(tiny, mutant_name, check_name, parts):
    mutant = next(m for m in MUTANTS if m.name == mutant_name)
    message = failure_message(mutant_vlm(mutant, tiny(mutant.family)), check_name)
    for part in (*parts, "layer", "max |diff|", "Look at"):
        assert part in message, message


def test_wildcard_failure_names_the_missed_layer(tiny):
    mutant = next(m for m in MUTANTS if m.name == "wildcard_skips_last_layer")
    vlm = mutant_vlm(mutant, tiny(mutant.family))
    message = failure_message(vlm, "patching_wildcard")
    assert f"0 times for layer {vlm.lm_num_layers - 1}" in message, message


class LossyWriteBack(HookedVLM):
    """A broken runtime: one hook type's function results are written back through bfloat16.

    With ``lossy_none`` only a function returning None is affected (the activation is written back:
    a "no-op" that is not one); otherwise only replacements are (an identity patch that is not one).
    """

    hook_type = "attn.hook_v"
    lossy_none = False

    def _register(self, point: HookPoint, function: HookFunction, *, reader: bool):
        if reader or point.hook_type != self.hook_type:
            return super()._register(point, function, reader=reader)

        def lossy(activation: torch.Tensor, hook_point: HookPoint) -> torch.Tensor | None:
            result = function(activation, hook_point)
            if (result is None) != self.lossy_none:
                return result
            written = activation if result is None else result
            return written.to(torch.bfloat16).to(written.dtype)

        return super()._register(point, lossy, reader=reader)


@pytest.mark.parametrize(("hook_type", "lossy_none"), [("attn.hook_v", False), ("mlp.hook_post", True)])
def test_identity_and_none_failure_names_the_hook_type(tiny, hook_type, lossy_none):
    base = tiny("qwen2_5_vl")  # fp32: a bf16 round trip is visible
    runtime = type("Broken", (LossyWriteBack,), {"hook_type": hook_type, "lossy_none": lossy_none})
    vlm = runtime(base.model, base.prompt_processor, adapter=base.adapter)
    message = failure_message(vlm, "patching_identity_and_none")
    assert f"culprit hook types: {hook_type})" in message, message
    assert ("returning None" in message) == lossy_none, message
    for part in ("position", "vocab", "max |diff|"):
        assert part in message, message


def test_cached_attention_checks_leave_the_models_implementation_as_it_was():
    """The checks run hooks under SDPA and eager and switch to eager for their reference: afterwards the
    model runs what it ran before, also a model set to eager by its user."""
    vlm = HookedVLM.from_pretrained("tiny/qwen3_vl", device="cpu")  # private: its attention is changed
    for implementation in ("sdpa", "eager"):
        vlm.model.set_attn_implementation(implementation)
        for name in ("cached_patterns_vs_eager_padded_batch", "cached_patterns_during_generate"):
            assert CHECKS[name].function(vlm).max_diff == 0.0
            assert vlm.adapter.lm_config._attn_implementation == implementation


# Two runtime bugs these checks found (fixed in core/runtime.py): recomputed hooks re-ran the user's
# q/k functions, and computed from the attention input as it was before later-registered patches.
def test_reading_patterns_does_not_call_q_functions_again(tiny):
    vlm = tiny("llava")
    calls: list[HookPoint] = []
    hooks = [
        ("lm.blocks.0.attn.hook_q", lambda _activation, point: calls.append(point)),
        ("lm.blocks.0.attn.hook_pattern", lambda _activation, _point: None),
    ]
    with vlm.run_with_hooks(hooks):
        vlm.forward(single_probe(vlm))
    assert len(calls) == 1, f"attn.hook_q function called {len(calls)} times in one forward"


def test_cached_pattern_is_the_pattern_of_a_patched_forward(tiny):
    vlm = tiny("llava")
    layer = 1
    patch = (f"lm.blocks.{layer}.attn.hook_in", lambda activation, _point: 3 * activation)
    # The order a user naturally writes: cache what they read, patch inside.
    with vlm.run_with_cache(f"lm.blocks.{layer}.attn.hook_pattern"), vlm.run_with_hooks([patch]):
        attentions = vlm.forward(single_probe(vlm), output_attentions=True).attentions
    torch.testing.assert_close(vlm.cache[f"lm.blocks.{layer}.attn.hook_pattern"], attentions[layer])
