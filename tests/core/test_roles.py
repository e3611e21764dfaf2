"""The role table: accessors, hook sites and head splits all read one row per module role."""

from __future__ import annotations

import pytest
import torch

from vlmforge.core import HOOK_TYPES, ROLES, ContractError, ModelAdapter
from vlmforge.core.roles import GATE_PROJ, LAYER, LM_HEAD, O_PROJ, Q_PROJ


def test_every_role_resolves_through_its_accessor(tiny) -> None:
    vlm = tiny("qwen3_vl")
    adapter = vlm.adapter
    for role in ROLES:
        if adapter.absence(role, 1) is not None:  # qwen3_vl is dense: no router / experts
            assert role.moe == "moe", role.name
            continue
        accessor = getattr(adapter, role.accessor)
        via_accessor = accessor(1) if role.per_layer else accessor()
        assert via_accessor is adapter.module(role, 1 if role.per_layer else None), role.name
        if role.all_layers is not None:
            assert getattr(adapter, role.all_layers)[1] is via_accessor, role.all_layers
    # The path really comes from the spec: q_proj of layer 1 is layers[1].self_attn.q_proj.
    layers = adapter.language_model.layers
    assert adapter.module(Q_PROJ, 1) is layers[1].self_attn.q_proj
    assert adapter.module(LM_HEAD) is vlm.model.lm_head


def test_an_overridden_accessor_moves_every_role_below_it(tiny) -> None:
    """A family overriding get_lm_layer (its layers live elsewhere) changes attn, q_proj, o_proj, ..."""
    vlm = tiny("qwen3_vl")

    class Shifted(type(vlm.adapter)):
        def get_lm_layer(self, layer: int) -> torch.nn.Module:
            return super().get_lm_layer(layer + 1)

    shifted = Shifted(vlm.model)
    layers = vlm.adapter.language_model.layers
    assert shifted.module(LAYER, 0) is layers[1]
    assert shifted.get_lm_q_proj(0) is layers[1].self_attn.q_proj
    assert shifted.module(O_PROJ, 0) is layers[1].self_attn.o_proj
    assert shifted.get_lm_down_proj(0) is layers[1].mlp.down_proj


def test_a_role_the_family_does_not_declare_is_a_contract_error(tiny) -> None:
    vlm = tiny("llava")
    spec = vlm.adapter.spec
    no_gate = spec.replace(modules=type(spec.modules)(gate_proj=None))
    adapter = type("NoGate", (ModelAdapter,), {"spec": no_gate})(vlm.model)
    with pytest.raises(ContractError, match="declares no gate_proj"):
        adapter.module(GATE_PROJ, 0)
    with pytest.raises(IndexError, match="out of range"):
        adapter.module(LAYER, 99)


def test_hook_sites_are_roles_and_head_splits_come_from_them(tiny) -> None:
    assert {hook.site for hook in HOOK_TYPES.values()} <= set(ROLES)
    vlm = tiny("qwen3_vl")
    adapter = vlm.adapter
    heads, kv_heads, head_dim = adapter.lm_num_heads, adapter.lm_num_kv_heads, adapter.lm_head_dim
    assert heads != kv_heads, "the test needs GQA to tell query from kv splits"
    expected = {
        "attn.hook_q": (2, 5, heads, head_dim),
        "attn.hook_k": (2, 5, kv_heads, head_dim),
        "attn.hook_v": (2, 5, kv_heads, head_dim),
        "attn.hook_z": (2, 5, heads, head_dim),
    }
    for hook_type, hook in HOOK_TYPES.items():
        flat_width = (heads if hook.heads == "query" else kv_heads) * head_dim if hook.heads else 7
        item = torch.zeros(2, 5, flat_width)
        got = tuple(adapter.format_cache_item(hook_type, (item, None)).shape)
        assert got == expected.get(hook_type, (2, 5, flat_width)), hook_type
