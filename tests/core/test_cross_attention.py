"""Cross-attention decoders (Llama 3.2 Vision): the image reaches the decoder through the layers that have
``spec.modules.cross_attention``; those layers have no self-attention hooks, and saying so is declared."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vlmforge.core import ContractError, InvalidHookError
from vlmforge.core.roles import ATTENTION, MLP, Q_PROJ
from vlmforge.core.spec import ModulePaths
from vlmforge.harness.checks.attention import compare_attention_to_eager
from vlmforge.harness.checks.image_tokens import images_through_cross_attention
from vlmforge.harness.probes import single_probe


def _cross_layers(vlm) -> list[int]:
    """Computed from the model itself, not from the adapter: the layers owning a ``cross_attn``."""
    return [i for i, layer in enumerate(vlm.adapter.language_model.layers) if hasattr(layer, "cross_attn")]


def _with_modules(vlm, modules: ModulePaths):
    """The same model under an adapter whose spec declares other module paths."""

    class Redeclared(type(vlm.adapter)):
        spec = vlm.adapter.spec.replace(modules=modules)

    return Redeclared(vlm.model)


def test_cross_attention_layers_are_the_layers_with_the_module(tiny) -> None:
    vlm = tiny("mllama")
    layers = _cross_layers(vlm)
    assert layers and vlm.adapter.cross_attention_layers == layers
    for layer in layers:
        reason = vlm.adapter.absence(Q_PROJ, layer)
        assert reason is not None and "cross-attention layer" in reason
        assert vlm.adapter.absence(MLP, layer) is None  # its MLP is an ordinary one
    self_attention = [i for i in range(vlm.lm_num_layers) if i not in layers]
    assert vlm.hook_layers("attn.hook_pattern") == self_attention
    assert vlm.hook_layers("hook_resid_pre") == list(range(vlm.lm_num_layers))
    assert vlm.hook_layers("mlp.hook_out") == list(range(vlm.lm_num_layers))
    with pytest.raises(InvalidHookError, match="cross-attention layer"):
        vlm.hook_points(f"lm.blocks.{layers[0]}.attn.hook_pattern")


def test_cross_attention_is_declared_not_inferred(tiny) -> None:
    # Without the declaration the cross-attention layers are not silently skipped: their missing
    # attention module is a contract error, and the image-token check stays applicable (it then fails).
    vlm = tiny("mllama")
    undeclared = _with_modules(vlm, ModulePaths())
    layer = _cross_layers(vlm)[0]
    assert undeclared.cross_attention_layers == [] and undeclared.absence(ATTENTION, layer) is None
    with pytest.raises(ContractError):
        undeclared.module(ATTENTION, layer)
    assert images_through_cross_attention(SimpleNamespace(adapter=undeclared)) is None
    # A declared module that no layer has declares nothing either.
    wrong = _with_modules(vlm, ModulePaths(cross_attention="no_such_module"))
    assert wrong.cross_attention_layers == []
    assert images_through_cross_attention(SimpleNamespace(adapter=wrong)) is None


def test_image_token_checks_name_the_cross_attention_layers(tiny) -> None:
    vlm = tiny("mllama")
    reason = images_through_cross_attention(vlm)
    assert reason is not None
    assert f"cross-attention layers {', '.join(map(str, _cross_layers(vlm)))} (cross_attn)" in reason
    assert images_through_cross_attention(tiny("llava")) is None  # images merged into the embeddings


def test_eager_attentions_are_matched_by_layer(tiny) -> None:
    # Eager reports one entry per decoder layer, the cross-attention layers' over the image features; the
    # recomputed self-attention patterns are compared with their own layer's entry, not zipped in order.
    vlm = tiny("mllama")
    inputs = single_probe(vlm)
    outputs = vlm.forward(inputs, output_attentions=True)
    assert len(outputs.attentions) == vlm.lm_num_layers
    length = inputs["input_ids"].shape[1]
    for layer in _cross_layers(vlm):
        assert outputs.attentions[layer].shape[-1] != length  # keys are image features, not tokens
    worst, calls = compare_attention_to_eager(vlm, inputs)
    assert [call.layer for call, _ in calls] == vlm.hook_layers("attn.hook_pattern")
    assert worst < 1e-5
    assert all(patterns.shape[-1] == length for _, patterns in calls)
