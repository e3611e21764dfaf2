"""The runtime keeps the model's attention implementation (SDPA), switches to eager only for calls
that ask for ``output_attentions``, recomputes patterns from every mask form, and loads sharded.

References are independent of vlmforge's code: transformers' own mask builders
(``masking_utils.sdpa_mask`` / ``eager_mask``), transformers' eager attention weights, and the
unsharded model's outputs for the ``device_map`` path.
"""

from __future__ import annotations

import builtins

import pytest
import torch
from transformers import masking_utils

from tests.conftest import tiny_vlm
from vlmforge import HookedVLM
from vlmforge.core import InputError
from vlmforge.core.adapter import additive_mask
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.probes import probe_batch, recorded_attention_calls, single_probe
from vlmforge.tiny import build_tiny_model, load_reference_config

ATTENTION_CHECKS = (
    "attention_vs_eager",
    "attention_vs_eager_padded_batch",
    "cached_patterns_vs_eager",
    "cached_patterns_vs_eager_padded_batch",
    "cached_patterns_during_generate",
)


def _implementations(vlm: HookedVLM) -> dict[str, str]:
    """``{config class: implementation}`` for the model's config and its sub-configs."""
    configs = [vlm.model.config] + [getattr(vlm.model.config, key) for key in vlm.model.config.sub_configs]
    return {type(config).__name__: config._attn_implementation for config in configs}


def _private(family: str = "llava") -> HookedVLM:
    """A tiny model of its own (these tests change attention implementations)."""
    return HookedVLM.from_pretrained(f"tiny/{family}", device="cpu")


# ------------------------------------------------------------------ implementation switching
def test_models_keep_their_default_attention_implementation(seed_vlm):
    assert seed_vlm.adapter.lm_config._attn_implementation == "sdpa"


def test_output_attentions_runs_eager_for_that_call_only(seed_vlm):
    inputs = single_probe(seed_vlm)
    before = _implementations(seed_vlm)
    outputs = seed_vlm.forward(inputs, output_attentions=True)
    assert outputs.attentions is not None and len(outputs.attentions) == seed_vlm.lm_num_layers
    length = inputs["input_ids"].shape[1]
    assert outputs.attentions[0].shape == (1, seed_vlm.adapter.lm_num_heads, length, length)
    assert _implementations(seed_vlm) == before
    generated = seed_vlm.generate(inputs, max_new_tokens=2, output_attentions=True)
    assert generated.attentions is not None and len(generated.attentions[0]) == seed_vlm.lm_num_layers
    assert _implementations(seed_vlm) == before


def test_implementation_is_restored_when_the_call_raises():
    vlm = _private()

    def explode(_activation, _point):
        raise RuntimeError("hook failed")

    hooks = [("lm.blocks.1.hook_resid_post", explode)]
    with pytest.raises(RuntimeError, match="hook failed"), vlm.run_with_hooks(hooks):
        vlm.forward(single_probe(vlm), output_attentions=True)
    assert vlm.adapter.lm_config._attn_implementation == "sdpa"


def test_mixed_implementations_are_restored_each_as_it_was():
    vlm = _private()
    vlm.model.set_attn_implementation({"vision_config": "eager", "text_config": "sdpa"})
    before = _implementations(vlm)
    assert set(before.values()) == {"eager", "sdpa"}, before
    with vlm.attention_implementation("eager"):
        assert set(_implementations(vlm).values()) == {"eager"}
    assert _implementations(vlm) == before


def test_an_unknown_implementation_is_an_input_error():
    vlm = _private()
    message = "cannot run attention implementation 'no_such_kernel'"
    with pytest.raises(InputError, match=message), vlm.attention_implementation("no_such_kernel"):
        pass
    assert vlm.adapter.lm_config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------- mask forms
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("query_offset", [0, 2])
def test_every_mask_form_becomes_eagers_mask(window, padding, query_offset):
    """additive_mask(SDPA's form) == transformers' eager mask, for causal / windowed / padded / offset."""
    batch, keys = 2, 7
    queries = keys - query_offset
    padding_mask = torch.ones(batch, keys, dtype=torch.bool)
    if padding:
        padding_mask[0, :2] = False
    function = (
        masking_utils.causal_mask_function
        if window is None
        else masking_utils.sliding_window_causal_mask_function(window)
    )
    common = {
        "batch_size": batch,
        "q_length": queries,
        "kv_length": keys,
        "q_offset": query_offset,
        "mask_function": function,
        "attention_mask": padding_mask if padding else None,
    }
    eager = masking_utils.eager_mask(dtype=torch.float32, **common)
    sdpa = masking_utils.sdpa_mask(local_size=window, **common)
    scores = torch.zeros(batch, 1, queries, keys)
    if sdpa is None:  # SDPA passes no mask (is_causal): only a square causal pass may do that
        assert queries == keys and not padding
    else:
        assert sdpa.dtype == torch.bool
    assert torch.equal(additive_mask(sdpa, scores, window), eager)
    assert torch.equal(additive_mask(eager, scores, window), eager)


def test_a_mask_of_an_unsupported_kind_is_explained():
    from vlmforge.core import ContractError

    with pytest.raises(ContractError, match='attn_implementation="sdpa" or "eager"'):
        additive_mask(object(), torch.zeros(1, 1, 2, 2))  # e.g. flex attention's BlockMask


def _sliding_window_vlm() -> HookedVLM:
    """Qwen2.5-VL with its (real, config-switched) sliding-window layers on: full 0-1, windowed 2-3."""
    reference = load_reference_config("Qwen/Qwen2.5-VL-3B-Instruct")
    config = reference.to_dict()
    config["text_config"].update(
        use_sliding_window=True, sliding_window=4096, max_window_layers=18, layer_types=None
    )
    real = type(reference)(**config)
    tiny = build_tiny_model(real)
    return HookedVLM(tiny.model, tiny.processor)


def test_sliding_window_layers_under_sdpa_recompute_exactly():
    vlm = _sliding_window_vlm()
    windows = [vlm.adapter.sliding_window(layer) for layer in range(vlm.lm_num_layers)]
    assert windows[:2] == [None, None] and all(isinstance(window, int) for window in windows[2:]), windows
    with recorded_attention_calls(vlm) as calls:
        vlm.forward(single_probe(vlm))
    assert calls[0].attention_mask is None  # full layers: SDPA's is_causal, no mask at all
    assert calls[-1].attention_mask.dtype == torch.bool  # windowed layers: a boolean mask
    assert single_probe(vlm)["input_ids"].shape[1] > windows[-1]  # the window really masks something
    for name in ATTENTION_CHECKS:
        assert CHECKS[name].function(vlm).max_diff == 0.0, name


# ------------------------------------------------------------------------------ device_map
@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A tiny Qwen2.5-VL saved as a checkpoint directory (the real loading path), and the model itself."""
    built = tiny_vlm("qwen2_5_vl")
    path = tmp_path_factory.mktemp("checkpoint")
    built.model.save_pretrained(path)
    built.processor.save_pretrained(path)
    return path, built


def _split_device_map(vlm: HookedVLM) -> dict[str, str]:
    """Odd decoder layers offloaded to disk (their weights stream in per forward through accelerate's
    hooks), even ones and every module outside the decoder layers on the CPU."""
    layers = f"{vlm.adapter.spec.language_model}.layers"
    placement: dict[str, str] = {}

    def place(prefix: str, module: torch.nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if name == layers:
                placement.update({f"{name}.{i}": "disk" if i % 2 else "cpu" for i in range(len(child))})
            elif layers.startswith(f"{name}."):
                place(f"{name}.", child)
            else:
                placement[name] = "cpu"

    place("", vlm.model)
    return placement


def test_a_sharded_checkpoint_hooks_and_recomputes_like_the_whole_one(saved_checkpoint, tmp_path):
    path, whole = saved_checkpoint
    device_map = _split_device_map(whole)
    sharded = HookedVLM.from_pretrained(
        str(path), device_map=device_map, offload_folder=str(tmp_path), dtype=torch.float32
    )
    assert sharded.model.hf_device_map == device_map
    assert sharded.adapter.get_lm_q_proj(1).weight.device.type == "meta"  # really offloaded
    assert sharded.device == torch.device("cpu")
    prompts, images = probe_batch(2)
    inputs = whole.prepare_messages_batch(prompts, images)
    hooks = ["lm.blocks.*.attn.hook_pattern", "lm.blocks.*.attn.hook_scores", "lm.blocks.*.hook_resid_post"]
    results = []
    for vlm in (whole, sharded):
        with vlm.run_with_cache(hooks):
            logits = vlm.forward(inputs).logits
        results.append((logits, dict(vlm.cache)))
    (whole_logits, whole_cache), (sharded_logits, sharded_cache) = results
    assert torch.equal(sharded_logits, whole_logits)
    assert sharded_cache.keys() == whole_cache.keys()
    for name, value in whole_cache.items():
        assert torch.equal(sharded_cache[name], value), name

    def zero_head(z, _point):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    patched = []
    for vlm in (whole, sharded):
        with vlm.run_with_hooks([("lm.blocks.*.attn.hook_z", zero_head)]):
            patched.append(vlm.forward(inputs).logits)
    assert torch.equal(patched[0], patched[1]) and not torch.equal(patched[0], whole_logits)
    attentions = sharded.forward(inputs, output_attentions=True).attentions
    assert len(attentions) == sharded.lm_num_layers
    assert sharded.adapter.lm_config._attn_implementation == "sdpa"


def test_device_map_auto_loads_on_what_this_machine_has(saved_checkpoint):
    path, whole = saved_checkpoint
    vlm = HookedVLM.from_pretrained(str(path), device_map="auto", dtype=torch.float32)
    inputs = single_probe(whole)
    assert torch.equal(vlm.forward(inputs).logits, whole.forward(inputs).logits)


def test_device_map_without_accelerate_names_the_extra(saved_checkpoint, monkeypatch):
    real_import = builtins.__import__

    def no_accelerate(name, *args, **kwargs):
        if name == "accelerate" or name.startswith("accelerate."):
            raise ImportError("No module named 'accelerate'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_accelerate)
    with pytest.raises(InputError, match=r'pip install "vlmforge\[sharding\]"'):
        HookedVLM.from_pretrained(str(saved_checkpoint[0]), device_map="auto")


def test_device_map_on_a_model_built_in_memory_is_explained():
    with pytest.raises(InputError, match="save_pretrained"):
        HookedVLM.from_pretrained("tiny/llava", device_map="auto")


# ------------------------------------------------------------------------------ KV cache
def test_recomputed_hooks_run_on_the_prompt_pass_only(seed_vlm):
    """Decoding steps see one query row: the runtime must recognise them by the layer's KV cache, whose
    keyword differs between transformers minors (vlmforge.core.versions.CACHE_KEYWORD)."""
    shapes: list[tuple[int, ...]] = []
    hooks = [("lm.blocks.0.attn.hook_pattern", lambda pattern, _point: shapes.append(tuple(pattern.shape)))]
    inputs = single_probe(seed_vlm)
    with seed_vlm.run_with_hooks(hooks):
        seed_vlm.generate(inputs, max_new_tokens=3, min_new_tokens=3)
    length = inputs["input_ids"].shape[1]
    assert shapes == [(1, seed_vlm.adapter.lm_num_heads, length, length)], shapes
