"""Attention recipe steps beyond project/norm/RoPE/scale, and experts that return one row per slot.

Llama4's decoder exercises all of them: RoPE through ``apply_rotary_emb(q, k, freqs_cis)`` on tokens-first
q/k, a q/k norm after RoPE that only RoPE layers build, a position-dependent query temperature on the no-RoPE
layers, chunked attention masks, and experts whose output is one row per (expert slot, token). Its
``Llama4ForConditionalGeneration.forward`` is broken in transformers 5.24 (see coverage.NOT_REGISTERED), so
the recomputation is compared with the text decoder's own eager attention weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoConfig
from transformers.models.llama4.modeling_llama4 import Llama4TextRMSNorm

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.errors import ContractError
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import AttentionRecipe, FamilySpec, MixtureOfExperts, ModulePaths
from vlmforge.tiny import build_tiny_model

RECIPE = AttentionRecipe(
    rotary_function="transformers.models.llama4.modeling_llama4.apply_rotary_emb",
    q_norm="qk_norm",
    k_norm="qk_norm",
    rotary_condition="use_rope",
    rotary_convention="freqs_tokens_first",
    norms_after_rotary=True,
    norms_where_present=True,
    query_temperature="attn_temperature_tuning and not use_rope",
)
SPEC = FamilySpec(
    name="llama4_recipe_test",
    checkpoints=(),
    tiny_reference="llama4",
    model_types=("llama4",),
    model_class="Llama4ForConditionalGeneration",
    language_model="language_model.model",
    lm_head="language_model.lm_head",
    modules=ModulePaths(mlp="feed_forward", gate_proj=None, up_proj=None, down_proj=None),
    moe=MixtureOfExperts(
        experts="experts", router="router", shared_experts="shared_expert", experts_slot_rows=True
    ),
    attention=RECIPE,
)


def _adapter(model: torch.nn.Module, spec: FamilySpec = SPEC, **recipe: object) -> ModelAdapter:
    if recipe:
        spec = dataclasses.replace(spec, attention=dataclasses.replace(spec.attention, **recipe))
    return type("Llama4RecipeAdapter", (ModelAdapter,), {"spec": spec})(model)


@pytest.fixture(scope="module")
def tiny():
    config = AutoConfig.for_model("llama4")
    # Small enough that a 9-token prompt spans several chunks and the temperature moves off 1.
    config.text_config.attention_chunk_size = 3
    config.text_config.floor_scale = 2
    tiny = build_tiny_model(config)
    tiny.model.config.text_config._attn_implementation = "eager"
    return tiny


def _eager_calls(model: torch.nn.Module, input_ids: torch.Tensor):
    """Each layer's attention inputs (hidden states, mask, position embeddings) and its eager weights."""
    calls: dict[int, tuple] = {}

    def record(layer: int, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        calls.setdefault(layer, (hidden, kwargs["attention_mask"], kwargs["position_embeddings"]))

    handles = [
        layer.self_attn.register_forward_pre_hook(
            lambda _m, args, kwargs, i=i: record(i, args, kwargs), with_kwargs=True
        )
        for i, layer in enumerate(model.language_model.model.layers)
    ]
    try:
        with torch.no_grad():
            out = model.language_model(input_ids=input_ids, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return calls, out.attentions


def _errors(adapter: ModelAdapter, calls, attentions, *, mask: bool = True) -> list[float]:
    return [
        (adapter.compute_attention_patterns(h, i, m if mask else None, pe) - attentions[i]).abs().max().item()
        for i, (h, m, pe) in sorted(calls.items())
    ]


@pytest.fixture(scope="module")
def eager(tiny):
    torch.manual_seed(0)
    return _eager_calls(tiny.model, torch.randint(0, 300, (2, 9)))


def test_the_layers_cover_every_step(tiny) -> None:
    text = tiny.model.config.text_config
    assert 0 in text.no_rope_layers and 1 in text.no_rope_layers  # RoPE and no-RoPE layers
    assert "chunked_attention" in text.layer_types


def test_llama4_attention_is_recomputed_exactly(tiny, eager) -> None:
    assert max(_errors(_adapter(tiny.model), *eager)) < 1e-5


@pytest.mark.parametrize(
    ("wrong", "layers"),
    [
        ({"query_temperature": None}, "nope"),  # the temperature moves the no-RoPE layer's pattern
        ({"query_temperature": "attn_temperature_tuning"}, "rope"),  # ... and must stay off RoPE layers
    ],
)
def test_a_wrong_temperature_declaration_is_visible(tiny, eager, wrong, layers) -> None:
    errors = _errors(_adapter(tiny.model, **wrong), *eager)
    affected = [
        e for i, e in enumerate(errors) if _adapter(tiny.model).applies_rotary(i) == (layers == "rope")
    ]
    assert max(affected) > 1e-3, errors


def test_the_rotary_convention_is_the_declared_one(tiny, eager) -> None:
    # The cos/sin convention cannot even unpack Llama4's complex freqs tensor.
    with pytest.raises(ValueError):
        _errors(_adapter(tiny.model, rotary_convention="cos_sin"), *eager)


def test_norms_missing_on_some_layers_must_be_declared(tiny, eager) -> None:
    with pytest.raises(ContractError):
        _errors(_adapter(tiny.model, norms_where_present=False), *eager)


def test_the_chunked_mask_comes_from_the_decoder(tiny, eager) -> None:
    errors = _errors(_adapter(tiny.model), *eager, mask=False)  # plain causal instead of the chunked mask
    assert max(errors) > 1e-2, errors


def test_norms_after_rotary_are_applied_after_it(tiny) -> None:
    # An L2 norm commutes with RoPE (a rotation); a weighted RMSNorm does not: swap one in on RoPE layers.
    model = tiny.model
    saved = {}
    torch.manual_seed(1)
    for i, layer in enumerate(model.language_model.model.layers):
        if hasattr(layer.self_attn, "qk_norm"):
            saved[i] = layer.self_attn.qk_norm
            norm = Llama4TextRMSNorm(model.config.text_config.head_dim)
            norm.weight.data = torch.rand_like(norm.weight) * 2
            layer.self_attn.qk_norm = norm
    try:
        calls, attentions = _eager_calls(model, torch.randint(0, 300, (1, 9)))
        right = _errors(_adapter(model), calls, attentions)
        wrong = _errors(_adapter(model, norms_after_rotary=False), calls, attentions)
    finally:
        for i, norm in saved.items():
            model.language_model.model.layers[i].self_attn.qk_norm = norm
    assert max(right) < 1e-5, right
    assert max(wrong) > 1e-3, wrong


def _vlm(tiny, spec: FamilySpec = SPEC) -> HookedVLM:
    adapter = _adapter(tiny.model, spec)
    return HookedVLM(tiny.model, adapter.processor_class(tiny.processor, spec), adapter=adapter)


def test_experts_out_is_the_sum_over_slots(tiny) -> None:
    vlm = _vlm(tiny)
    mlp = vlm.adapter.get_lm_mlp(0)
    hidden = torch.randn(2, 5, vlm.adapter.lm_hidden_dim)
    seen = {}

    def keep(activation: torch.Tensor, _point) -> None:
        seen["experts"] = activation.clone()

    def zero(activation: torch.Tensor, _point) -> torch.Tensor:
        return torch.zeros_like(activation)

    with torch.no_grad():
        full = mlp(hidden)[0]
        shared = mlp.shared_expert(hidden.reshape(-1, hidden.shape[-1]))
        with vlm.run_with_hooks([("lm.blocks.0.mlp.hook_experts_out", keep)]):
            mlp(hidden)
        with vlm.run_with_hooks([("lm.blocks.0.mlp.hook_experts_out", zero)]):
            without = mlp(hidden)[0]
        doubled = seen["experts"] * 2
        with vlm.run_with_hooks([("lm.blocks.0.mlp.hook_experts_out", lambda a, _p: a * 2)]):
            patched = mlp(hidden)[0]
    assert seen["experts"].shape == hidden.shape
    torch.testing.assert_close(seen["experts"].reshape(full.shape), full - shared)
    torch.testing.assert_close(without, shared)
    torch.testing.assert_close(patched, shared + doubled.reshape(shared.shape))


def test_slot_rows_must_be_declared(tiny) -> None:
    spec = dataclasses.replace(SPEC, moe=dataclasses.replace(SPEC.moe, experts_slot_rows=False))
    vlm = _vlm(tiny, spec)
    hidden = torch.randn(1, 4, vlm.adapter.lm_hidden_dim)
    hooks = [("lm.blocks.0.mlp.hook_experts_out", lambda a, _p: None)]
    with pytest.raises(ContractError, match="experts_slot_rows"), torch.no_grad(), vlm.run_with_hooks(hooks):
        vlm.adapter.get_lm_mlp(0)(hidden)
