"""Cross-attention blocks between the decoder layers (Flamingo / IDEFICS): the decoder applies its own list
of gated cross-attention blocks (``spec.modules.cross_attention_blocks``) before some of its layers. Every
layer keeps its self-attention and its hooks; the blocks write into the residual stream between layers."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from vlmforge.core.spec import ModulePaths
from vlmforge.harness.checks.image_tokens import images_through_cross_attention
from vlmforge.harness.checks.patching import ModuleRecorder, block_between
from vlmforge.harness.probes import single_probe
from vlmforge.tiny.weights import GATE_RANGE, is_gate


def _with_modules(vlm, modules: ModulePaths):
    """The same model under an adapter whose spec declares other module paths."""

    class Redeclared(type(vlm.adapter)):
        spec = vlm.adapter.spec.replace(modules=modules)

    return Redeclared(vlm.model)


def test_blocks_are_found_on_the_model_and_keep_every_layer_hooked(tiny) -> None:
    vlm = tiny("idefics")
    blocks = vlm.adapter.cross_attention_blocks
    assert blocks is vlm.adapter.language_model.gated_cross_attn_layers and len(blocks)
    assert vlm.adapter.cross_attention_layers == []  # no layer replaces its self-attention
    every = list(range(vlm.lm_num_layers))
    assert vlm.hook_layers("attn.hook_pattern") == every and vlm.hook_layers("hook_resid_pre") == every
    reason = images_through_cross_attention(vlm)
    assert reason is not None and f"{len(blocks)} cross-attention blocks (gated_cross_attn_layers)" in reason


def test_blocks_are_declared_not_inferred(tiny) -> None:
    # Undeclared, or declared under a name the decoder lacks: the image-token checks stay applicable.
    vlm = tiny("idefics")
    for modules in (ModulePaths(), ModulePaths(cross_attention_blocks="no_such_blocks")):
        adapter = _with_modules(vlm, modules)
        assert adapter.cross_attention_blocks is None and adapter.image_cross_attention() is None
        assert images_through_cross_attention(SimpleNamespace(adapter=adapter)) is None


def test_resid_pre_is_the_self_attention_layer_input_after_the_block(tiny) -> None:
    # The block before layer i writes into the residual: resid_pre[i] is layer i's input (what its
    # self-attention block reads), not resid_post[i - 1]; the block is what lies between them.
    vlm = tiny("idefics")
    inputs = single_probe(vlm)
    blocks = ModuleRecorder(vlm.adapter.cross_attention_blocks)
    with (
        ModuleRecorder(vlm.adapter.lm_layers) as layers,
        blocks,
        vlm.run_with_cache(["lm.blocks.*.hook_resid_pre", "lm.blocks.*.hook_resid_post"]),
    ):
        vlm.forward(inputs, use_cache=False)
    for layer in range(1, vlm.lm_num_layers):
        pre, post = (
            vlm.cache[f"lm.blocks.{layer}.hook_resid_pre"],
            vlm.cache[f"lm.blocks.{layer - 1}.hook_resid_post"],
        )
        assert torch.equal(pre, layers.inputs[layer])
        assert not torch.equal(pre, post)  # the (opened) gate lets the image in
        block = block_between(layers, blocks, layer - 1)
        assert block is not None and torch.equal(blocks.call_again(block, post), pre)


def test_rotary_from_the_position_ids_the_attention_is_passed(tiny) -> None:
    # IDEFICS' attention rotates with its own rotary_emb from position_ids (no position_embeddings): the
    # recomputation uses those positions, not 0..L-1 (left padding shifts them).
    vlm = tiny("idefics")
    hidden = torch.randn(2, 5, vlm.adapter.lm_hidden_dim)
    shifted = torch.arange(3, 8)[None].expand(2, -1)
    cos, sin = vlm.adapter.call_position_embeddings(0, hidden, {"position_ids": shifted})
    own_cos, own_sin = vlm.adapter.get_lm_attn(0).rotary_emb(hidden, shifted)
    assert torch.equal(cos, own_cos) and torch.equal(sin, own_sin)
    default_cos, _ = vlm.adapter._default_position_embeddings(hidden, 0)
    assert not torch.allclose(cos, default_cos)
    given = (torch.zeros(1), torch.ones(1))
    assert vlm.adapter.call_position_embeddings(0, hidden, {"position_embeddings": given}) is given
    assert vlm.adapter.call_position_embeddings(0, hidden, {}) is None


def test_zero_initialised_gates_are_opened_in_tiny_models(tiny) -> None:
    # HF initialises IDEFICS' tanh gates to 0, which would shut the image out of the tiny model entirely.
    vlm = tiny("idefics")
    for block in vlm.adapter.cross_attention_blocks:
        for gate in (block.alpha_cross_attn, block.alpha_dense):
            assert (
                GATE_RANGE[0]
                <= float(gate.detach().abs().min())
                <= float(gate.detach().abs().max())
                <= GATE_RANGE[1]
            )
    assert is_gate("alpha", nn.Parameter(torch.zeros(1, 1, 8)))
    assert not is_gate("alpha", nn.Parameter(torch.full((1, 1, 8), 0.5)))  # not zero: left alone
    assert not is_gate("position_embedding", nn.Parameter(torch.zeros(4, 8)))  # a table, not a gate
    assert not is_gate("bias", nn.Parameter(torch.zeros(8)))  # biases are shifted as biases
    assert not is_gate("in_proj_bias", nn.Parameter(torch.zeros(8)))


def test_decoupled_additional_vocabulary_holds_the_image_token(tiny) -> None:
    # IDEFICS checkpoints keep <image> in a second embedding table (IdeficsDecoupledEmbedding /
    # IdeficsDecoupledLinear: additional_vocab_size rows after vocab_size); the tiny default has none, so
    # the same tiny model is rebuilt with the image token and every token after it in those rows.
    import copy

    from vlmforge.core.runtime import HookedVLM
    from vlmforge.harness.checks.image_tokens import embedding_rows
    from vlmforge.harness.mutants import PASS, run_checks

    vlm = tiny("idefics")
    image_id = vlm.adapter.get_image_token_id()
    config = copy.deepcopy(vlm.model.config)
    config.additional_vocab_size = config.vocab_size - image_id
    config.vocab_size = image_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = type(vlm.model)._from_config(config).eval()
    embedding = model.model.embed_tokens
    assert (
        embedding.weight.shape[0] == image_id
        and embedding_rows(embedding) == image_id + config.additional_vocab_size
    )
    decoupled = HookedVLM(
        model, vlm.prompt_processor, adapter=type(vlm.adapter)(model), model_name="tiny/idefics"
    )
    results = run_checks(decoupled, only=("image_token_in_vocab", "logit_lens", "contract_shapes"))
    assert all(outcome == PASS for outcome in results.values()), results
