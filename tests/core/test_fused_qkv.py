"""A fused q/k/v projection (spec modules.qkv_proj): its parts per layout, and partial rotary."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.glm4v.modeling_glm4v import apply_rotary_pos_emb as glm4v_rotary
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotary

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.roles import K_PROJ, Q_PROJ, V_PROJ
from vlmforge.core.spec import AttentionRecipe, FamilySpec, ModulePaths

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 3


def _adapter(layout: str, rotary: str | None = None) -> ModelAdapter:
    """An adapter of a decoder with a fused q/k/v projection (GQA: 4 query heads, 2 kv heads)."""
    spec = FamilySpec(
        name="fused",
        checkpoints=(),
        tiny_reference="fused",
        model_types=("fused",),
        model_class="Fused",
        language_model="decoder",
        modules=ModulePaths(q_proj=None, k_proj=None, v_proj=None, qkv_proj="qkv"),
        attention=AttentionRecipe(qkv_layout=layout, rotary_function=rotary),
    )
    config = type("Config", (), {"num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS})()
    config.hidden_size, config.head_dim, config.num_hidden_layers = 8, HEAD_DIM, 1
    decoder = nn.Module()
    decoder.config = config
    model = nn.Module()
    model.decoder = decoder
    return type("FusedAdapter", (ModelAdapter,), {"spec": spec})(model)


def _labelled(layout: str) -> torch.Tensor:
    """A fused output [1, (H + 2 H_kv) d_h] whose values say (part, head, dim): 100 part + 10 head + dim."""
    if layout == "blocks":
        rows = [(0, h) for h in range(HEADS)] + [(1, h) for h in range(KV_HEADS)]
        rows += [(2, h) for h in range(KV_HEADS)]
    else:  # per kv head: its query heads, its key, its value
        group = HEADS // KV_HEADS
        rows = [
            row
            for kv in range(KV_HEADS)
            for row in [(0, kv * group + g) for g in range(group)] + [(1, kv), (2, kv)]
        ]
    return torch.tensor([[p * 100 + h * 10 + d for p, h in rows for d in range(HEAD_DIM)]], dtype=torch.float)


@pytest.mark.parametrize("layout", ["blocks", "per_head"])
def test_each_role_reads_and_writes_its_own_part(layout: str) -> None:
    adapter = _adapter(layout)
    output = _labelled(layout)
    for part, (role, heads) in enumerate(((Q_PROJ, HEADS), (K_PROJ, KV_HEADS), (V_PROJ, KV_HEADS))):
        read, write = adapter.output_part(role)
        got = read(output)
        expected = torch.tensor(
            [[part * 100 + h * 10 + d for h in range(heads) for d in range(HEAD_DIM)]], dtype=torch.float
        )
        assert torch.equal(got, expected), (layout, role.name, got)
        written = output.clone()
        write(written, got + 1000)
        assert torch.equal(read(written), expected + 1000)
        # Nothing but the role's part changed.
        assert int((written != output).sum()) == heads * HEAD_DIM


def test_the_roles_resolve_to_the_fused_module() -> None:
    adapter = _adapter("blocks")
    layer = nn.Module()
    layer.self_attn = nn.Module()
    layer.self_attn.qkv = nn.Linear(8, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
    adapter.language_model.layers = nn.ModuleList([layer])
    assert adapter.module(Q_PROJ, 0) is adapter.module(V_PROJ, 0) is layer.self_attn.qkv
    assert adapter.absence(K_PROJ, 0) is None


def _persimmon_rotary(query, key, cos, sin):
    """What Persimmon's forward does: slice the rotary dims, rotate them with the Llama function, re-join."""
    width = cos.shape[-1]
    query_rot, key_rot = llama_rotary(query[..., :width], key[..., :width], cos, sin)
    return torch.cat((query_rot, query[..., width:]), -1), torch.cat((key_rot, key[..., width:]), -1)


@pytest.mark.parametrize(
    ("rotary", "reference"),
    [(llama_rotary, _persimmon_rotary), (glm4v_rotary, glm4v_rotary)],
    ids=["slices_outside", "slices_inside"],
)
def test_partial_rotary_rotates_the_first_cos_width_dims(rotary, reference) -> None:
    # Persimmon slices the rotary dims before calling the Llama function; Glm4v's function slices inside
    # (the adapter's slice is then a no-op): each must give what the model computes, and the pass-through
    # dims stay as they are.
    adapter = _adapter("blocks")
    adapter.__dict__["_rotary"] = rotary
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 4, 2, 8, generator=generator)
    angles = torch.randn(1, 2, 2, generator=generator)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # 4 of 8 dims
    query_out, key_out = adapter._apply_rotary(query, key, (cos, sin))
    expected_query, expected_key = reference(query, key, cos, sin)
    assert torch.allclose(query_out, expected_query) and torch.allclose(key_out, expected_key)
    assert torch.equal(query_out[..., 4:], query[..., 4:]) and torch.equal(key_out[..., 4:], key[..., 4:])
    assert not torch.allclose(query_out[..., :4], query[..., :4])


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="qkv_layout"):
        _adapter("interleaved")
