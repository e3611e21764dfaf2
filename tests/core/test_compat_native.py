"""Native runtime behaviour that VLM Spectra compatibility (issue #10) moved into ``vlmforge.core``:
``ActivationCache``, ``attn.hook_mask``, patch helpers from native hooks, ``require_grads``, the cache
seeing patched values, ``get_image_token_range`` / ``get_model_components``, error types, adapter
class attributes."""

from __future__ import annotations

import pytest
import torch
import transformers
from PIL import Image

from tests.conftest import tiny_vlm
from vlmforge.core import HookedVLM, ModelRegistry, UnknownModelError
from vlmforge.core.cache import ActivationCache
from vlmforge.core.hooks import ALL_HOOK_TYPES, HOOK_TYPES, RawHook
from vlmforge.core.patching import BlockAttention, PatchHead, ZeroAblation

IMAGE = Image.new("RGB", (64, 48), (200, 30, 30))


def _inputs(vlm: HookedVLM):
    return vlm.prepare_messages("What is shown?", IMAGE)


def test_run_with_cache_yields_an_activation_cache_with_stack(seed_vlm):
    with seed_vlm.run_with_cache("lm.blocks.*.hook_resid_post") as cache:
        seed_vlm.forward(_inputs(seed_vlm))
    assert isinstance(cache, ActivationCache) and isinstance(cache, dict) and cache is seed_vlm.cache
    stacked = cache.stack("lm.blocks.*.hook_resid_post")
    assert stacked.shape[0] == seed_vlm.lm_num_layers
    assert torch.equal(stacked[1], cache["lm.blocks.1.hook_resid_post"])


def test_mask_hook_is_a_control_hook_outside_the_activation_table():
    assert "attn.hook_mask" in ALL_HOOK_TYPES and "attn.hook_mask" not in HOOK_TYPES


def test_mask_hook_sees_a_synthesized_causal_mask_and_none_is_a_no_op(seed_vlm):
    inputs = _inputs(seed_vlm)
    length = inputs["input_ids"].shape[1]
    plain = seed_vlm.forward(inputs).logits
    seen: list[torch.Tensor] = []
    with seed_vlm.run_with_hooks([("lm.blocks.*.attn.hook_mask", lambda mask, hook: seen.append(mask))]):
        assert torch.equal(seed_vlm.forward(inputs).logits, plain)
    assert len(seen) == seed_vlm.lm_num_layers
    assert torch.equal(seen[0][0, 0], torch.full((length, length), float("-inf")).triu(1))


def test_mask_hook_under_padding_gets_the_boolean_mask_and_block_attention_knocks_out(seed_vlm):
    batch = seed_vlm.prepare_messages_batch(["a", "a longer question"], [IMAGE, IMAGE.resize((32, 32))])
    seen: list[torch.Tensor] = []
    with seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_mask", lambda mask, hook: seen.append(mask))]):
        seed_vlm.forward(batch)
    assert seen[0].dtype == torch.bool and seen[0].shape[0] == 2
    last = batch["input_ids"].shape[1] - 1
    first_real = int(batch["attention_mask"][0].argmax())
    pattern = "lm.blocks.0.attn.hook_pattern"
    with (
        seed_vlm.run_with_cache(pattern),
        seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_mask", BlockAttention([(last, first_real)]))]),
    ):
        seed_vlm.forward(batch)
    assert (seed_vlm.cache[pattern][0, :, last, first_real] == 0).all()
    assert (seed_vlm.cache[pattern][1, :, last, first_real] > 0).all(), "only batch_idx 0 is blocked"


def test_mask_hook_works_while_generating(seed_vlm):
    inputs = _inputs(seed_vlm)
    shapes: list[tuple[int, ...]] = []

    def block_first_key(mask, hook):
        shapes.append(tuple(mask.shape))
        return BlockAttention([(mask.shape[-2] - 1, 0)])(mask, hook)

    with seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_mask", block_first_key)]):
        out = seed_vlm.generate(inputs, max_new_tokens=3)
    length = inputs["input_ids"].shape[1]
    assert out.sequences.shape[1] == length + 3
    assert shapes[0][-2:] == (length, length) and shapes[1][-2:] == (1, length + 1)


@pytest.mark.parametrize("cache_first", [True, False])
def test_the_cache_records_the_patched_value_whichever_block_opened_first(seed_vlm, cache_first):
    name = "lm.blocks.1.mlp.hook_out"
    cache = seed_vlm.run_with_cache(name)
    patch = seed_vlm.run_with_hooks([(name, ZeroAblation())])
    with cache if cache_first else patch, patch if cache_first else cache:
        seed_vlm.forward(_inputs(seed_vlm))
    assert (seed_vlm.cache[name] == 0).all()


def test_nested_patch_blocks_run_outer_first():
    vlm = tiny_vlm("llava")
    name = "lm.blocks.0.hook_resid_post"
    order: list[str] = []
    with (
        vlm.run_with_hooks([(name, lambda x, hook: order.append("outer"))]),
        vlm.run_with_hooks([(name, lambda x, hook: order.append("inner"))]),
    ):
        vlm.forward(_inputs(vlm))
    assert order == ["outer", "inner"]


def test_patch_helpers_work_on_native_split_heads(seed_vlm):
    inputs = _inputs(seed_vlm)
    heads, head_dim = seed_vlm.adapter.lm_num_heads, seed_vlm.adapter.lm_head_dim

    def by_hand(z, hook):
        z = z.clone()
        z[0, :, 1] = 0
        return z

    with seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_z", by_hand)]):
        expected = seed_vlm.forward(inputs).logits
    helper = PatchHead(1, torch.zeros(head_dim), num_heads=heads)
    with seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_z", helper)]):
        assert torch.equal(seed_vlm.forward(inputs).logits, expected)
    with seed_vlm.run_with_hooks([("lm.blocks.0.attn.hook_q", ZeroAblation(token_idx=-1))]):
        assert not torch.equal(seed_vlm.forward(inputs).logits, expected)


def test_raw_hooks_get_the_module_call_and_flat_values():
    vlm = tiny_vlm("qwen3_vl")
    seen: list[tuple] = []
    hook = RawHook(lambda module, args, kwargs, value: seen.append((module, value.shape)))
    with vlm.run_with_hooks([("lm.blocks.0.attn.hook_q", hook)]):
        vlm.forward(_inputs(vlm))
    module, shape = seen[0]
    assert module is vlm.adapter.get_lm_q_proj(0)
    assert shape[-1] == vlm.adapter.lm_num_heads * vlm.adapter.lm_head_dim and len(shape) == 3


def test_require_grads_gives_gradients_through_a_forward():
    vlm = HookedVLM.from_pretrained("tiny/qwen2_5_vl", device="cpu")  # private: its parameters change
    inputs = _inputs(vlm)
    kept: list[torch.Tensor] = []

    def keep(x, hook):
        x.retain_grad()
        kept.append(x)

    with (
        vlm.run_with_hooks([("lm.blocks.1.hook_resid_post", keep)]),
        vlm.run_with_cache("lm.blocks.1.attn.hook_pattern"),
    ):
        out = vlm.forward(inputs, require_grads=True)
    out.logits[0, -1].max().backward()
    assert kept[0].grad is not None and kept[0].grad.abs().sum() > 0
    assert vlm.adapter.get_lm_head().weight.grad is not None
    assert not vlm.forward(inputs).logits.requires_grad, "no_grad again without require_grads"


def test_image_token_range_and_model_components(seed_vlm):
    inputs = _inputs(seed_vlm)
    ids = inputs["input_ids"][0]
    first, last = seed_vlm.get_image_token_range(inputs)
    image_id = seed_vlm.adapter.get_image_token_id()
    assert ids[first] == image_id == ids[last] and (ids[:first] != image_id).all()
    assert (ids[last + 1 :] != image_id).all()
    with pytest.raises(ValueError):
        seed_vlm.get_image_token_range(seed_vlm.prepare_messages_batch(["a", "b"], [IMAGE, IMAGE]))
    components = seed_vlm.get_model_components()
    assert components["norm"] is seed_vlm.adapter.get_lm_norm()
    assert components["lm_head"] is seed_vlm.adapter.get_lm_head()


def test_unknown_model_is_a_value_error_and_still_a_key_error():
    with pytest.raises(ValueError):
        ModelRegistry.resolve("no-such-org/no-such-model-xyz")
    assert issubclass(UnknownModelError, KeyError)


def test_adapter_classes_name_their_model_and_processor_class(seed_vlm):
    adapter_class = type(seed_vlm.adapter)
    assert isinstance(seed_vlm.model, adapter_class.MODEL_CLASS)
    assert adapter_class.PROCESSOR_CLASS is transformers.AutoProcessor
    assert seed_vlm.adapter.processor is seed_vlm.processor
