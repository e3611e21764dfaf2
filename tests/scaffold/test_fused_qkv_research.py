"""Research of a fused q/k/v projection: found from structure, followed through its split, layout measured."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.persimmon.modeling_persimmon import PersimmonAttention

from vlmforge.scaffold.research.forward_analysis import analyze_forward
from vlmforge.scaffold.research.geometry import HeadGeometry
from vlmforge.scaffold.research.projections import find_projections, fused_qkv


def apply_rotary_pos_emb(q, k, cos, sin):  # the name research looks for; resolved from this module's globals
    return q * cos + sin, k * cos + sin


class _BlocksAttention(nn.Module):
    """Phi-3 style: [Q; K; V] sliced off one fused projection, a per-head q norm, partial rotary."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj = nn.Linear(8, 24)
        self.q_norm = nn.LayerNorm(4)
        self.o_proj = nn.Linear(8, 8)

    def forward(self, hidden_states, position_embeddings, attention_fn):
        qkv = self.qkv_proj(hidden_states)
        query_states = qkv[..., :8]
        key_states = qkv[..., 8:16]
        query_states = self.q_norm(query_states.view(1, -1, 2, 4)).transpose(1, 2)
        cos, sin = position_embeddings
        query_rot, query_pass = query_states[..., :2], query_states[..., 2:]
        key_rot, key_pass = key_states[..., :2], key_states[..., 2:]
        query_rot, key_rot = apply_rotary_pos_emb(query_rot, key_rot, cos, sin)
        query_states = torch.cat((query_rot, query_pass), dim=-1)
        key_states = torch.cat((key_rot, key_pass), dim=-1)
        key_states = key_states * 2.0
        return attention_fn(self, query_states, key_states, scaling=0.5)


def test_q_and_k_are_followed_through_a_fused_split() -> None:
    # Persimmon: q, k, v unpacked from a helper's split of query_key_value; q/k layernorms, partial rotary.
    analysis = analyze_forward(
        PersimmonAttention,
        q_proj=None,
        k_proj=None,
        norm_attributes=["q_layernorm", "k_layernorm"],
        qkv_proj="query_key_value",
    )
    assert (analysis.qkv_var, analysis.query_var, analysis.key_var) == (
        "fused_qkv",
        "query_states",
        "key_states",
    )
    assert {(n.attribute, n.variable) for n in analysis.norm_calls} == {
        ("q_layernorm", "query_states"),
        ("k_layernorm", "key_states"),
    }
    # The partial-rotary slice and re-join is the recipe, not an unknown transformation.
    assert analysis.unrecognized == []


def test_sliced_q_and_k_and_what_the_recipe_lacks() -> None:
    analysis = analyze_forward(
        _BlocksAttention, q_proj=None, k_proj=None, norm_attributes=["q_norm"], qkv_proj="qkv_proj"
    )
    assert (analysis.query_var, analysis.key_var) == ("query_states", "key_states")
    assert [(n.attribute, n.variable) for n in analysis.norm_calls] == [("q_norm", "query_states")]
    # Still flagged: a transformation after the re-join.
    assert analysis.unrecognized == ["key_states = key_states * 2.0"]


def test_a_fused_projection_counts_only_when_it_is_exactly_q_k_v_wide() -> None:
    attention = _BlocksAttention()
    geometry = HeadGeometry(hidden=8, heads=2, kv_heads=2, explicit_head_dim=4, head_dim=4)
    assert fused_qkv(find_projections(attention, geometry), geometry) == "qkv_proj"
    wider = HeadGeometry(hidden=8, heads=2, kv_heads=4, explicit_head_dim=4, head_dim=4)
    assert fused_qkv(find_projections(attention, wider), wider) is None


def test_the_layout_is_measured_on_the_tiny_model(researched) -> None:
    report = researched("fuyu")
    answer = report["qkv_layout"]
    # Measured: only the per-head layout reproduces eager attention, the blocks one is tried and rejected.
    assert answer.value == "per_head" and answer.status == "measured", answer
    assert "blocks: CheckFailure" in answer.evidence or "blocks: AssertionError" in answer.evidence, answer
    assert report.value("qkv_proj") == "query_key_value"
