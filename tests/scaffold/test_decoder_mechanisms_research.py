"""Research of the decoder mechanisms beyond the plain recipe: per-tensor RoPE calls, KV-shared layers, a
value norm, a transformed MLP gate and parallel residual streams. Each is found from the model (module
attributes, forward sources, config keys) or measured on the tiny model, never from the family's name."""

from __future__ import annotations

import torch
from torch import nn

from vlmforge.scaffold.research.attention import _kv_shared_answer, _v_norm_answer
from vlmforge.scaffold.research.forward_analysis import ForwardAnalysis
from vlmforge.scaffold.research.mlp import _gate_transform_answers


# ------------------------------------------------------------------------------------- on Gemma3n itself
def test_gemma3n_mechanisms_are_found_and_measured(researched) -> None:
    report = researched("gemma3n")
    expected = {
        "rotary_convention": ("per_tensor", "measured"),
        "kv_shared": ("is_kv_shared_layer", "found"),
        "v_norm": ("v_norm", "found"),
        "gate_transform": ("_gaussian_topk", "found"),
        "gate_transform_condition": ("activation_sparsity", "found"),
        "active_stream": ("altup_active_idx", "measured"),
    }
    for key, (value, status) in expected.items():
        answer = report[key]
        assert (answer.value, answer.status) == (value, status), (key, answer.evidence)
    # The measurement names what each rejected convention did on the tiny model.
    assert "cos_sin: TypeError" in report["rotary_convention"].evidence
    assert "4 stacked [B, L, D] residual streams" in report["active_stream"].evidence
    # The query is rotated unconditionally: no rotary condition is taken from the key's kv-sharing branch.
    assert report.value("rotary_condition") is None
    assert "rotary_condition = " not in report["rotary_function"].evidence
    assert not report.todos()


def test_a_plain_decoder_declares_none_of_them(researched) -> None:
    report = researched("llava")
    assert report.value("rotary_convention") == "cos_sin"
    for key in ("kv_shared", "v_norm", "gate_transform", "gate_transform_condition", "active_stream"):
        assert report.value(key) is None, (key, report[key].evidence)
    assert report["active_stream"].status == "measured"
    assert "one [B, L, D] residual stream" in report["active_stream"].evidence


def test_unmeasured_residual_streams_are_an_honest_unknown(researched) -> None:
    answer = researched("gemma3n", False)["active_stream"]
    assert (answer.value, answer.status) == (None, "unknown")
    # The source reading alone still says how the attention calls RoPE, and that it was not confirmed.
    convention = researched("gemma3n", False)["rotary_convention"]
    assert convention.value == "per_tensor" and "not confirmed on a tiny model" in convention.evidence


# ------------------------------------------------------------------------------------- on small modules
class _SharedAttention(nn.Module):
    def __init__(self, shared: bool, width: int = 4) -> None:
        super().__init__()
        self.reuses_keys = shared
        self.is_causal = True
        self.q_proj = nn.Linear(8, 8)
        if not shared:
            self.k_proj = nn.Linear(8, 8)
            self.v_proj = nn.Linear(8, 8)
            self.v_norm = nn.LayerNorm(width)

    def forward(self, hidden_states, store):
        query_states = self.q_proj(hidden_states)
        if self.reuses_keys:
            key_states, value_states = store
        else:
            key_states = self.k_proj(hidden_states)
            value_states = self.v_proj(hidden_states).view(1, -1, 2, 4)
            value_states = self.v_norm(value_states)
        attn_output = torch.softmax(query_states @ key_states.mT, -1) @ value_states
        return self.out_norm(attn_output)


def test_kv_shared_layers_are_the_ones_without_a_key_projection() -> None:
    modules = [_SharedAttention(shared) for shared in (False, False, True)]
    analysis = ForwardAnalysis("_SharedAttention", __name__, references={"reuses_keys"})
    answer = _kv_shared_answer(modules, "k_proj", analysis)
    assert (answer.value, answer.status) == ("reuses_keys", "found"), answer.evidence
    assert "layers [2]" in answer.evidence
    # Every layer computing its keys: nothing declared.
    assert _kv_shared_answer(modules[:2], "k_proj", analysis).value is None


def test_kv_shared_layers_no_attribute_names_are_a_hand_edit() -> None:
    modules = [_SharedAttention(shared) for shared in (False, True)]
    for module in modules:
        del module.reuses_keys
    answer = _kv_shared_answer(modules, "k_proj", ForwardAnalysis("_SharedAttention", __name__))
    assert (answer.value, answer.status) == (None, "hand_edit"), answer.evidence


def test_the_value_norm_is_followed_from_v_proj_and_stops_at_the_kernel() -> None:
    attn = _SharedAttention(False)
    answer = _v_norm_answer(attn, "v_proj", ["v_norm", "out_norm"], head_dim=4)
    # out_norm normalises the kernel's output (it also reads the query): no value norm.
    assert (answer.value, answer.status) == ("v_norm", "found"), answer.evidence
    wide = _SharedAttention(False, width=8)
    assert _v_norm_answer(wide, "v_proj", ["v_norm"], head_dim=4).status == "hand_edit"


class _SparseMLP(nn.Module):
    def __init__(self, sparsity: float) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(4, 8)
        self.up_proj = nn.Linear(4, 8)
        self.down_proj = nn.Linear(8, 4)
        self.act_fn = nn.GELU()
        self.activation_sparsity = sparsity

    def forward(self, hidden_states):
        gate = self.gate_proj(hidden_states)
        if self.activation_sparsity > 0.0:
            gate = self._sparsify(gate)
        return self.down_proj(self.act_fn(gate) * self.up_proj(hidden_states))

    def _sparsify(self, gate):
        return torch.relu(gate - gate.mean(-1, keepdim=True))


def test_the_gate_transform_and_its_layers_are_read_from_the_mlp() -> None:
    transform, condition = _gate_transform_answers([_SparseMLP(0.9), _SparseMLP(0.0)], [0, 1], "gate_proj")
    assert (transform.value, condition.value) == ("_sparsify", "activation_sparsity"), condition.evidence
    assert "layers [0]" in condition.evidence
    # The activation module itself is no transform.
    dense = _gate_transform_answers([nn.Sequential()], [0], "gate_proj")
    assert [a.value for a in dense] == [None, None]
