"""Logit lens: every family, checked against a hand computation from the weights."""

from __future__ import annotations

import pytest
import torch
from analysis_helpers import gradient_image

from vlmforge.analysis import compute_logit_lens, logit_lens


def _hidden_states(vlm):
    inputs = vlm.prepare_messages("What is shown?", gradient_image(64, 48))
    hidden = vlm.forward(inputs, output_hidden_states=True).hidden_states
    # The residual stream as the hooks show it (the active one where the layers pass parallel streams).
    return inputs, tuple(vlm.adapter.residual_view(states) for states in hidden)


def test_top_k_equals_a_hand_computation(family, tiny) -> None:
    vlm = tiny(family)
    inputs, hidden = _hidden_states(vlm)
    norm, head = vlm.adapter.get_lm_norm(), vlm.adapter.get_lm_head()
    tokenizer = vlm.prompt_processor.tokenizer
    lens = compute_logit_lens(hidden, norm, head, tokenizer, top_k=5)
    assert len(lens) == len(hidden) == vlm.lm_num_layers + 1
    assert all(len(layer) == inputs["input_ids"].shape[1] for layer in lens)
    # By hand: the unembedding as a matrix product, softmax. The final norm is the family's own module
    # (RMSNorm scales by `weight` on most families, by `1 + weight` on zero-centred ones such as Qwen3.5),
    # applied to the residual: the lens must not skip it.
    layer, position = 1, -1
    h = hidden[layer][:, [position]]
    with torch.no_grad():
        normed = norm(h)[0, 0].double()
    assert not torch.allclose(normed, h[0, 0].double())
    probabilities = torch.softmax(normed @ head.weight.double().T, dim=-1)
    values, ids = probabilities.topk(5)
    expected = [(tokenizer.decode([i]), f"{p:.4f}") for i, p in zip(ids.tolist(), values.tolist())]
    got = lens[layer][position]
    # The lens computes in the model's dtype (fp32), the hand computation in fp64: the 4-decimal strings may
    # round a value near a half-unit apart, so they agree to one unit in the last place.
    assert all(abs(float(p) - float(q)) <= 1.5e-4 for (_, p), (_, q) in zip(got, expected, strict=True))
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert float(got[0][1]) >= float(got[-1][1])


def test_tensor_forms_and_errors(tiny) -> None:
    vlm = tiny("llava")
    inputs, hidden = _hidden_states(vlm)
    args = (vlm.adapter.get_lm_norm(), vlm.adapter.get_lm_head(), vlm.prompt_processor.tokenizer)
    reference = compute_logit_lens(hidden, *args, top_k=3)
    stacked = torch.stack(hidden)  # [layers, 1, seq, d]
    assert compute_logit_lens(stacked, *args, top_k=3) == reference
    assert compute_logit_lens(stacked[:, 0], *args, top_k=3) == reference
    assert logit_lens(vlm, inputs, top_k=3) == reference
    with pytest.raises(ValueError, match="one input"):
        compute_logit_lens(tuple(h.repeat(2, 1, 1) for h in hidden), *args)
    with pytest.raises(ValueError, match="one input"):
        compute_logit_lens(stacked.repeat(1, 2, 1, 1), *args)
    with pytest.raises(ValueError, match="top_k"):
        compute_logit_lens(hidden, *args, top_k=0)
