"""The runtime on a decoder beyond the plain recipe (tiny Gemma3n): parallel residual streams shown as the
active one, KV-shared layers without k/v hooks or recomputed patterns, a transformed MLP gate."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import tiny_vlm
from vlmforge.core import ContractError, InvalidHookError, ModelAdapter
from vlmforge.harness.probes import probe_image


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm("gemma3n")


def _inputs(vlm):
    return vlm.prepare_messages("Describe the image.", probe_image(56, 56))


def _layer_inputs(vlm, inputs, hooks=()):
    """Each decoder layer's raw input (the whole stack of streams) as the layer receives it (recorded by
    plain torch hooks registered after the runtime's patches, so they see the patched input)."""
    seen: dict[int, torch.Tensor] = {}

    def keep(_module, args, kwargs, index):
        seen.setdefault(index, (args[0] if args else kwargs["hidden_states"]).clone())

    with vlm.run_with_hooks(list(hooks)):
        handles = [
            layer.register_forward_pre_hook(lambda m, a, k, i=i: keep(m, a, k, i), with_kwargs=True)
            for i, layer in enumerate(vlm.adapter.lm_layers)
        ]
        try:
            vlm.forward(inputs)
        finally:
            for handle in handles:
                handle.remove()
    return seen


def test_residual_hooks_show_the_active_stream(vlm):
    inputs = _inputs(vlm)
    raw = _layer_inputs(vlm, inputs)
    assert raw[1].dim() == 4  # [N, B, L, D]: the streams travel stacked between the layers
    with vlm.run_with_cache("lm.blocks.*.hook_resid_pre"):
        vlm.forward(inputs)
    active = vlm.adapter.active_stream
    for layer in range(vlm.lm_num_layers):
        cached = vlm.cache[f"lm.blocks.{layer}.hook_resid_pre"]
        assert cached.shape == raw[layer].shape[1:]
        assert torch.equal(cached, raw[layer][active])


def test_patching_the_residual_writes_the_active_stream_only(vlm):
    inputs = _inputs(vlm)
    plain = _layer_inputs(vlm, inputs)
    patched = _layer_inputs(vlm, inputs, [("lm.blocks.1.hook_resid_pre", lambda x, _p: x * 0)])
    active = vlm.adapter.active_stream
    assert torch.equal(patched[1][active], torch.zeros_like(plain[1][active]))
    others = [i for i in range(plain[1].shape[0]) if i != active]
    assert torch.equal(patched[1][others], plain[1][others])
    assert torch.equal(patched[0], plain[0])


def test_kv_shared_layers_have_no_key_hooks_and_no_recomputed_patterns(vlm):
    shared = [layer for layer in range(vlm.lm_num_layers) if vlm.adapter.is_kv_shared_layer(layer)]
    assert shared == [2, 3]
    assert vlm.hook_layers("attn.hook_pattern") == [0, 1]
    assert vlm.hook_layers("attn.hook_k") == [0, 1]
    assert vlm.hook_layers("attn.hook_q") == [0, 1, 2, 3]
    with pytest.raises(InvalidHookError, match="keys and values of another layer"):
        vlm.hook_points("lm.blocks.2.attn.hook_pattern")
    with pytest.raises(InvalidHookError, match="it has no v_proj"):
        vlm.hook_points("lm.blocks.3.attn.hook_v")
    states = torch.zeros(1, 3, vlm.adapter.lm_hidden_dim)
    with pytest.raises(ContractError, match="not recomputed from its own input"):
        vlm.adapter.compute_attention_scores(states, 2)


def test_the_gate_transform_runs_where_its_condition_holds(vlm):
    gate = torch.randn(1, 3, vlm.adapter.lm_mlp_dim)
    sparse = vlm.adapter.gate_activation_input(gate, 0)
    assert torch.equal(sparse, vlm.adapter.get_lm_mlp(0)._gaussian_topk(gate))
    assert (sparse == 0).float().mean() > 0.5  # most of the gate is cut
    assert vlm.adapter.gate_activation_input(gate, 2) is gate


def test_a_wrong_active_stream_attribute_is_a_clear_error(vlm):
    spec = type(vlm.adapter).spec
    broken = type(
        "Broken", (ModelAdapter,), {"spec": dataclasses.replace(spec, active_stream="hidden_activation")}
    )
    with pytest.raises(ContractError, match=r"no stream index; fix spec\.active_stream"):
        _ = broken(vlm.model).active_stream
    missing = type("Missing", (ModelAdapter,), {"spec": dataclasses.replace(spec, active_stream="no_such")})
    with pytest.raises(ContractError, match="does not exist"):
        _ = missing(vlm.model).active_stream
