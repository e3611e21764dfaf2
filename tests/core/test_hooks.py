"""Hook-name parsing and expansion."""

import pytest

from vlmforge.core import HOOK_TYPES, InvalidHookError, expand_hook_names


def test_star_expands_to_every_layer():
    points = expand_hook_names("lm.blocks.*.attn.hook_pattern", 3)
    assert [p.name for p in points] == [f"lm.blocks.{i}.attn.hook_pattern" for i in range(3)]


def test_negative_index_counts_from_the_end_and_duplicates_collapse():
    points = expand_hook_names(["lm.blocks.-1.hook_resid_post", "lm.blocks.3.hook_resid_post"], 4)
    assert [p.name for p in points] == ["lm.blocks.3.hook_resid_post"]


@pytest.mark.parametrize(
    "name", ["lm.blocks.0.hook_nope", "blocks.0.hook_resid_pre", "lm.blocks.x.hook_resid_pre", 7]
)
def test_invalid_names_list_valid_hook_types(name):
    with pytest.raises(InvalidHookError) as error:
        expand_hook_names([name], 2)
    assert all(hook in str(error.value) for hook in HOOK_TYPES)


def test_out_of_range_layer():
    with pytest.raises(InvalidHookError, match="out of range"):
        expand_hook_names("lm.blocks.5.hook_resid_pre", 2)


def test_all_vlm_spectra_hook_types_exist():
    expected = {
        "hook_resid_pre",
        "hook_resid_post",
        "attn.hook_in",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_scores",
        "attn.hook_pattern",
        "attn.hook_z",
        "attn.hook_head_out",
        "attn.hook_out",
        "mlp.hook_in",
        "mlp.hook_pre",
        "mlp.hook_pre_linear",
        "mlp.hook_post",
        "mlp.hook_out",
    }
    # VLM Spectra's hook types, plus the mixture-of-experts ones (which exist on MoE layers only).
    assert set(HOOK_TYPES) == expected | {"mlp.hook_router_logits", "mlp.hook_experts_out"}
