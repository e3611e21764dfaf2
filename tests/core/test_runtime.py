"""HookedVLM runtime on the tiny models: forward, generate, caching, patching and input errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import SEED_FAMILIES, tiny_vlm
from vlmforge import HookedVLM
from vlmforge.core import InputError, InvalidHookError
from vlmforge.harness.probes import probe_image


def _inputs(vlm, text="Describe the image.", size=(56, 56)):
    return vlm.prepare_messages(text, probe_image(*size))


def test_forward_and_generate(seed_vlm):
    inputs = _inputs(seed_vlm)
    logits = seed_vlm.forward(inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    out = seed_vlm.generate(inputs, max_new_tokens=3)
    assert out.sequences.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out.sequences[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_batch_of_two_equals_singles(seed_vlm):
    texts = ["Describe the image.", "What color is the big square in the corner?"]
    images = [probe_image(56, 56, seed=1), probe_image(84, 40, seed=2)]
    batch = seed_vlm.prepare_messages_batch(texts, images)
    assert (batch["attention_mask"][:, -1] == 1).all(), "batches must be left-padded"
    logits = seed_vlm.forward_batch(batch).logits
    for row, (text, image) in enumerate(zip(texts, images)):
        single = seed_vlm.forward(seed_vlm.prepare_messages(text, image)).logits[0]
        diff = (logits[row, -single.shape[0] :] - single).abs().max()
        assert diff <= 1e-4, f"row {row}: max |diff| {diff:.3g}"


def test_cache_is_non_invasive_and_detached(seed_vlm):
    inputs = _inputs(seed_vlm)
    plain = seed_vlm.forward(inputs).logits
    with seed_vlm.run_with_cache(["lm.blocks.*.hook_resid_post", "lm.blocks.*.attn.hook_pattern"]) as cache:
        cached = seed_vlm.forward(inputs).logits
    assert torch.equal(plain, cached)
    assert cache is seed_vlm.cache and len(cache) == 2 * seed_vlm.lm_num_layers
    assert not any(t.requires_grad for t in cache.values())


def test_zero_ablating_a_head_changes_only_what_it_should():
    vlm = tiny_vlm("qwen3_vl")
    inputs = _inputs(vlm)
    plain = vlm.forward(inputs).logits

    def ablate_head_0(z, hook):
        assert z.shape[2:] == (vlm.adapter.lm_num_heads, vlm.adapter.lm_head_dim) and hook.layer == 0
        z = z.clone()
        z[:, :, 0] = 0
        return z

    with vlm.run_with_hooks([("lm.blocks.0.attn.hook_z", ablate_head_0)]):
        patched = vlm.forward(inputs).logits
    assert not torch.allclose(plain, patched)
    with vlm.run_with_hooks([("lm.blocks.*.attn.hook_z", lambda z, hook: None)]):
        untouched = vlm.forward(inputs).logits
    assert torch.equal(plain, untouched), "a hook returning None must not change anything"
    assert torch.equal(vlm.forward(inputs).logits, plain), "hooks must be removed after the block"


def test_patching_resid_pre_with_the_cached_value_is_identity():
    vlm = tiny_vlm("llava")
    inputs = _inputs(vlm)
    with vlm.run_with_cache("lm.blocks.1.hook_resid_pre"):
        plain = vlm.forward(inputs).logits
    saved = vlm.cache["lm.blocks.1.hook_resid_pre"]
    with vlm.run_with_hooks([("lm.blocks.1.hook_resid_pre", lambda x, hook: saved.clone())]):
        assert torch.equal(vlm.forward(inputs).logits, plain)
    with vlm.run_with_hooks([("lm.blocks.1.hook_resid_pre", lambda x, hook: torch.zeros_like(x))]):
        assert not torch.equal(vlm.forward(inputs).logits, plain)


def test_nested_contexts_keep_both_hooks():
    vlm = tiny_vlm("smolvlm")
    inputs = _inputs(vlm)
    seen: list[str] = []
    with (
        vlm.run_with_cache("lm.blocks.0.hook_resid_post") as outer,
        vlm.run_with_hooks([("lm.blocks.0.mlp.hook_out", lambda x, hook: seen.append(hook.name))]),
        vlm.run_with_cache("lm.blocks.1.hook_resid_post") as inner,
    ):
        vlm.forward(inputs)
    assert set(outer) == {"lm.blocks.0.hook_resid_post"} and set(inner) == {"lm.blocks.1.hook_resid_post"}
    assert seen == ["lm.blocks.0.mlp.hook_out"]


def test_hooks_are_removed_when_the_block_raises():
    vlm = tiny_vlm("llava")
    layer = vlm.adapter.get_lm_layer(0)
    before = (len(layer._forward_hooks), len(layer._forward_pre_hooks))
    with pytest.raises(RuntimeError, match="boom"), vlm.run_with_cache("lm.blocks.0.hook_resid_post"):
        raise RuntimeError("boom")

    def explode(x, hook):
        raise ValueError("inside hook")

    with (
        pytest.raises(ValueError, match="inside hook"),
        vlm.run_with_hooks([("lm.blocks.0.hook_resid_pre", explode)]),
    ):
        vlm.forward(_inputs(vlm))
    assert (len(layer._forward_hooks), len(layer._forward_pre_hooks)) == before


def test_recomputed_hooks_cannot_be_patched_and_bad_replacements_are_explained():
    vlm = tiny_vlm("llava")
    inputs = _inputs(vlm)
    with (
        pytest.raises(InvalidHookError, match="cannot be patched"),
        vlm.run_with_hooks([("lm.blocks.0.attn.hook_pattern", lambda p, hook: p * 0)]),
    ):
        vlm.forward(inputs)
    with (
        pytest.raises(InvalidHookError, match="shape"),
        vlm.run_with_hooks([("lm.blocks.0.attn.hook_q", lambda q, hook: q[..., :1])]),
    ):
        vlm.forward(inputs)
    with pytest.raises(InvalidHookError, match="one of"), vlm.run_with_cache("lm.blocks.0.hook_nonsense"):
        pass


def test_generate_cache_keeps_the_prompt_pass():
    vlm = tiny_vlm("qwen2_5_vl")
    inputs = _inputs(vlm)
    with vlm.run_with_cache(["lm.blocks.0.hook_resid_post", "lm.blocks.0.attn.hook_pattern"]):
        vlm.generate(inputs, max_new_tokens=3)
    length = inputs["input_ids"].shape[1]
    assert vlm.cache["lm.blocks.0.hook_resid_post"].shape[1] == length
    assert vlm.cache["lm.blocks.0.attn.hook_pattern"].shape[-2:] == (length, length)


def test_assistant_prefill_and_append_text():
    for family in SEED_FAMILIES:
        vlm = tiny_vlm(family)
        image = probe_image(56, 56)
        text = vlm.prompt_processor.render(
            "Describe it.", image, assistant_prefill="It shows", append_text=" a"
        )
        assert text.endswith("It shows a"), f"{family}: {text[-60:]!r}"
        plain = vlm.prompt_processor.render("Describe it.", image)
        assert "It shows" not in plain


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK"])
def test_image_modes_are_converted_to_rgb(mode):
    vlm = tiny_vlm("llava")
    rgb = probe_image(40, 40)
    image = rgb.convert(mode)
    inputs = vlm.prepare_messages("Describe.", image)
    assert inputs["pixel_values"].shape[0] >= 1


def test_image_path_input(tmp_path):
    vlm = tiny_vlm("llava")
    path = tmp_path / "probe.png"
    probe_image(40, 40).save(path)
    from_path = vlm.prepare_messages("Describe.", str(path))
    from_image = vlm.prepare_messages("Describe.", Image.open(path))
    assert torch.equal(from_path["pixel_values"], from_image["pixel_values"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda vlm: vlm.prepare_messages("   ", probe_image(32, 32)), "empty"),
        (lambda vlm: vlm.prepare_messages("Hi", "does/not/exist.png"), "cannot read image"),
        (lambda vlm: vlm.prepare_messages("Hi", 42), "PIL.Image"),
        (lambda vlm: vlm.prepare_messages_batch(["a", "b"], [probe_image(32, 32)]), "2 tasks but 1 images"),
        (lambda vlm: vlm.prepare_messages_batch([], []), "at least one"),
        (lambda vlm: vlm.prepare_messages_batch("a", [probe_image(32, 32)]), "list of tasks"),
    ],
)
def test_bad_input_is_explained(call, message):
    with pytest.raises(InputError, match=message):
        call(tiny_vlm("llava"))


def test_image_the_processor_rejects_is_explained_with_its_size():
    vlm = tiny_vlm("qwen2_5_vl")
    with pytest.raises(InputError, match=r"Qwen2_5_VLProcessor rejected the input \(image sizes 2000x4\)"):
        vlm.prepare_messages("Describe.", probe_image(2000, 4))


def test_constructor_from_built_model_resolves_the_adapter():
    built = tiny_vlm("qwen3_vl")
    vlm = HookedVLM(built.model, built.processor)
    assert vlm.adapter.spec.name == "qwen3_vl" and vlm.processor is built.processor


def test_lm_head_dim_comes_from_explicit_head_dim():
    vlm = tiny_vlm("qwen3_vl")
    config = vlm.adapter.lm_config
    assert vlm.adapter.lm_head_dim == config.head_dim
    assert vlm.adapter.get_lm_q_proj(0).weight.shape[0] == config.num_attention_heads * config.head_dim


def test_from_pretrained_loads_a_local_checkpoint_directory(tmp_path):
    """The real-checkpoint code path, offline: save a tiny model + processor, load it by path."""
    built = tiny_vlm("qwen2_5_vl")
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    loaded = HookedVLM.from_pretrained(str(tmp_path), device="cpu", dtype=torch.float32)
    assert loaded.adapter.spec.name == "qwen2_5_vl" and loaded.model_name == str(tmp_path)
    inputs = _inputs(built)
    assert torch.equal(loaded.forward(inputs).logits, built.forward(inputs).logits)


def test_missing_checkpoint_files_say_how_to_work_offline():
    from vlmforge.core import CheckpointLoadError

    with pytest.raises(CheckpointLoadError, match=r"local checkpoint directory.*'tiny/llava'"):
        HookedVLM.from_pretrained("llava-7b", device="cpu", local_files_only=True)


def test_lm_mlp_dim_reads_a_per_layer_list_of_equal_widths():
    import types

    from vlmforge.core.errors import ContractError

    vlm = tiny_vlm("qwen3_vl")
    width = vlm.adapter.lm_config.intermediate_size
    # Gemma3n's text config lists one width per layer; equal entries are the decoder's F.
    config = types.SimpleNamespace(intermediate_size=[width] * 4)

    class _PerLayerWidths(type(vlm.adapter)):
        lm_config = property(lambda self: config)

    adapter = object.__new__(_PerLayerWidths)
    adapter.__dict__.update({k: v for k, v in vlm.adapter.__dict__.items() if k != "lm_config"})
    assert adapter.lm_mlp_dim == width
    config.intermediate_size = [width, width + 8]
    with pytest.raises(ContractError, match="differ by layer"):
        adapter.lm_mlp_dim  # noqa: B018
