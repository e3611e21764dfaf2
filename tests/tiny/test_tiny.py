"""Acceptance tests for vlmforge.tiny: offline tiny VLMs with real HF processors."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, PretrainedConfig

from vlmforge.tiny import (
    PROBE_IMAGE_SIZES,
    DimensionCoincidenceError,
    TinyVLM,
    build_tiny_model,
    build_tiny_processor,
    build_tiny_tokenizer,
    check_distinct_sizes,
    load_reference_config,
    model_class_for,
    probe_image_tokens,
    reference_checkpoints,
    resample_layer_list,
    resolve_reference,
    shrink_config,
)
from vlmforge.tiny.shrink import DEFAULT_LIMITS
from vlmforge.tiny.weights import is_norm

# One reference checkpoint per family, plus transformers' default config of each family's model_type.
REFERENCES = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "smolvlm": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct",
}
BARE_MODEL_TYPES = ["llava", "idefics3", "qwen2_5_vl", "qwen3_vl"]
SOURCES = [*REFERENCES.values(), *BARE_MODEL_TYPES]
REQUIRED_CHECKPOINTS = [
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-1.5-13b-hf",
    "HuggingFaceTB/SmolVLM-256M-Instruct",
    "HuggingFaceTB/SmolVLM-500M-Instruct",
    "HuggingFaceTB/SmolVLM-Instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2.5-VL-32B-Instruct",
    "Qwen/Qwen2.5-VL-72B-Instruct",
    "ByteDance-Seed/UI-TARS-1.5-7B",
    "Qwen/Qwen3-VL-2B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
]


def _image(width: int, height: int, seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _inputs(tiny: TinyVLM, texts: list[str], images: list[Image.Image]) -> dict[str, torch.Tensor]:
    prompts = [tiny.processor.apply_chat_template(_messages(t), add_generation_prompt=True) for t in texts]
    batch = tiny.processor(text=prompts, images=images, padding=True, return_tensors="pt")
    return dict(batch)


def _image_feature_count(tiny: TinyVLM, inputs: dict[str, torch.Tensor]) -> int:
    """Rows the vision tower + projector produce for the images in ``inputs``."""
    get_image_features = tiny.model.model.get_image_features
    parameters = inspect.signature(get_image_features).parameters
    with torch.no_grad():
        output = get_image_features(**{k: v for k, v in inputs.items() if k in parameters})
    features = output.pooler_output if hasattr(output, "pooler_output") else output
    if isinstance(features, torch.Tensor):
        return features.shape[:-1].numel()
    return sum(f.shape[:-1].numel() for f in features)


def _text_config(config: PretrainedConfig) -> PretrainedConfig:
    return config.get_text_config(decoder=True)


def _vision_layers(config: PretrainedConfig) -> int:
    vision = config.vision_config
    return getattr(vision, "depth", None) or vision.num_hidden_layers


SINGLE_IMAGE = _image(200, 150, seed=0)
OTHER_IMAGE = _image(240, 80, seed=1)
PROMPT = "What is shown in this image?"


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the thread pool's spinning
    # makes each forward 10-50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=SOURCES)
def tiny(request: pytest.FixtureRequest) -> TinyVLM:
    return build_tiny_model(request.param)


@pytest.fixture(scope="module")
def single_inputs(tiny: TinyVLM) -> dict[str, torch.Tensor]:
    return _inputs(tiny, [PROMPT], [SINGLE_IMAGE])


# ----------------------------------------------------------------------------------------------------------
# Reference configs
# ----------------------------------------------------------------------------------------------------------


def test_required_reference_checkpoints_are_stored() -> None:
    assert set(REQUIRED_CHECKPOINTS) <= set(reference_checkpoints())
    for checkpoint in REQUIRED_CHECKPOINTS:
        config = load_reference_config(checkpoint)
        assert config.name_or_path == checkpoint
        assert _text_config(config).num_hidden_layers >= 12


# Parameter counts published on the checkpoints' model cards, in billions: a whole-config accuracy check.
PUBLISHED_SIZES_B = {
    "llava-hf/llava-1.5-7b-hf": 7.06,
    "llava-hf/llava-1.5-13b-hf": 13.4,
    "HuggingFaceTB/SmolVLM-256M-Instruct": 0.256,
    "HuggingFaceTB/SmolVLM-500M-Instruct": 0.507,
    "HuggingFaceTB/SmolVLM-Instruct": 2.25,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.75,
    "Qwen/Qwen2.5-VL-7B-Instruct": 8.29,
    "Qwen/Qwen2.5-VL-32B-Instruct": 33.5,
    "Qwen/Qwen2.5-VL-72B-Instruct": 73.4,
    "ByteDance-Seed/UI-TARS-1.5-7B": 8.29,
    "Qwen/Qwen3-VL-2B-Instruct": 2.13,
    "Qwen/Qwen3-VL-4B-Instruct": 4.44,
    "Qwen/Qwen3-VL-8B-Instruct": 8.77,
}


@pytest.mark.parametrize("checkpoint", sorted(PUBLISHED_SIZES_B))
def test_reference_config_has_published_parameter_count(checkpoint: str) -> None:
    config = load_reference_config(checkpoint)
    with torch.device("meta"):
        model = model_class_for(config)._from_config(config)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(PUBLISHED_SIZES_B[checkpoint], rel=0.005)


def test_unknown_checkpoint_lists_stored_ones() -> None:
    with pytest.raises(KeyError) as error:
        load_reference_config("nobody/no-such-vlm")
    assert "Qwen/Qwen2.5-VL-72B-Instruct" in str(error.value)


def test_reference_configs_carry_structural_facts() -> None:
    qwen72 = load_reference_config("Qwen/Qwen2.5-VL-72B-Instruct")
    text = _text_config(qwen72)
    geometry = (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads)
    assert geometry == (8192, 80, 64, 8)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert qwen72.vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    qwen3 = load_reference_config("Qwen/Qwen3-VL-4B-Instruct")
    assert _text_config(qwen3).head_dim == 128 != _text_config(qwen3).hidden_size // 32
    assert qwen3.vision_config.deepstack_visual_indexes == [5, 11, 17]
    smol = load_reference_config("HuggingFaceTB/SmolVLM-256M-Instruct")
    assert (smol.scale_factor, smol.image_token_id, smol.vision_config.patch_size) == (4, 49190, 16)
    llava = load_reference_config("llava-hf/llava-1.5-13b-hf")
    facts = (llava.image_token_id, _text_config(llava).hidden_size, llava.vision_config.image_size)
    assert facts == (32000, 5120, 336)


# ----------------------------------------------------------------------------------------------------------
# Generic shrinking
# ----------------------------------------------------------------------------------------------------------


def test_tiny_sizes_keep_structure(tiny: TinyVLM) -> None:
    text = _text_config(tiny.config)
    assert text.hidden_size <= 64
    assert text.num_hidden_layers <= 4
    assert _vision_layers(tiny.config) <= 2
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    section = (text.rope_parameters or {}).get("mrope_section")
    if section is not None:
        assert sum(section) == head_dim // 2
    assert text.vocab_size == len(tiny.processor.tokenizer)
    for parameter in tiny.model.parameters():
        assert parameter.dtype == torch.float32
    assert not tiny.model.training
    assert tiny.config._attn_implementation == "sdpa"  # transformers' default, as a checkpoint loads


def test_tiny_attention_geometry_exposes_mixups(tiny: TinyVLM) -> None:
    """KV grouping, head_dim and scale mix-ups must change numbers on every tiny model the arch allows."""
    real_text, text = _text_config(resolve_reference(tiny.reference)[0]), _text_config(tiny.config)
    real_ratio = real_text.num_attention_heads // real_text.num_key_value_heads
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    assert heads % kv_heads == 0
    if real_ratio == 1:
        assert kv_heads == heads >= 2  # MHA stays MHA
    elif real_text.num_key_value_heads == 1:
        assert kv_heads == 1  # MQA stays MQA
    else:
        assert kv_heads >= 2  # >= 2 KV groups, each of >= 2 heads: grouping bugs change numbers
        cap = DEFAULT_LIMITS.max_query_heads // DEFAULT_LIMITS.min_kv_heads
        assert heads // kv_heads == min(real_ratio, cap) >= 2
    if getattr(text, "head_dim", None) is not None:
        # An explicit head_dim field is honoured by the modeling code: q_proj is heads * head_dim wide.
        assert text.head_dim * heads != text.hidden_size
        assert text.head_dim % 2 == 0 and text.head_dim >= DEFAULT_LIMITS.min_head_dim
        q_widths = {
            m.out_features for n, m in tiny.model.get_decoder().named_modules() if n.endswith("q_proj")
        }
        assert q_widths == {heads * text.head_dim}
    else:
        # No head_dim field: the architecture derives head_dim = hidden // heads (forced coupling).
        assert text.hidden_size % heads == 0


@pytest.mark.parametrize(
    ("checkpoint", "direction"),
    [("Qwen/Qwen3-VL-4B-Instruct", 1), ("Qwen/Qwen3-VL-2B-Instruct", 1), ("mistral3", -1)],
)
def test_head_dim_decoupling_direction(checkpoint: str, direction: int) -> None:
    """A real q width > hidden stays >, < stays < (even with head_dim at its floor); coupled goes >."""
    text = _text_config(shrink_config(resolve_reference(checkpoint)[0]))
    difference = text.head_dim * text.num_attention_heads - text.hidden_size
    assert difference * direction > 0
    assert text.head_dim >= DEFAULT_LIMITS.min_head_dim
    section = (text.rope_parameters or {}).get("mrope_section")
    if section is not None:
        assert sum(section) == text.head_dim // 2


def test_deepstack_taps_existing_vision_layers() -> None:
    for source in ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl"):
        tiny_config = shrink_config(resolve_reference(source)[0])
        indexes = tiny_config.vision_config.deepstack_visual_indexes
        assert indexes == [0, 1]
        # Some decoder layers stay un-injected, so injected and plain layers both exist.
        assert len(indexes) < _text_config(tiny_config).num_hidden_layers


def test_windowed_vit_keeps_a_windowed_and_a_full_block() -> None:
    vision = shrink_config(load_reference_config("Qwen/Qwen2.5-VL-7B-Instruct")).vision_config
    # Block 0 windowed, block 1 full attention: the real ViT has 7 windowed blocks per full one.
    assert vision.fullatt_block_indexes == [1]
    assert vision.window_size == vision.patch_size * vision.spatial_merge_size * 2


def test_layer_pattern_resampling() -> None:
    gemma_like = ["sliding_attention"] * 5 + ["full_attention"]
    assert resample_layer_list(gemma_like * 5, 4) == ["sliding_attention"] * 3 + ["full_attention"]
    assert resample_layer_list(["a", "b"] * 8, 4) == ["a", "b", "a", "b"]
    window_tail = ["full_attention"] * 28 + ["sliding_attention"] * 8
    assert resample_layer_list(window_tail, 4) == ["full_attention"] * 3 + ["sliding_attention"]
    taps = [i in (5, 11, 17) for i in range(24)]
    assert resample_layer_list(taps, 2) == [True, True]


def test_sliding_layers_keep_pattern_and_a_biting_window() -> None:
    text = _text_config(shrink_config(AutoConfig.for_model("gemma3")))
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert len(text.layer_types) == text.num_hidden_layers
    assert text.sliding_window <= 16


def test_chunked_attention_gets_a_biting_chunk() -> None:
    text = _text_config(shrink_config(load_reference_config("meta-llama/Llama-4-Scout-17B-16E-Instruct")))
    assert text.attention_chunk_size <= 16
    assert {"chunked_attention", "full_attention"} <= set(text.layer_types)


def test_shrink_rejects_token_ids_outside_tiny_vocab() -> None:
    with pytest.raises(ValueError, match="image_token_id"):
        shrink_config(load_reference_config("Qwen/Qwen3-VL-2B-Instruct"), vocab_size=400)


def test_shrunk_72b_config_builds_fast() -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = shrink_config(load_reference_config("Qwen/Qwen2.5-VL-72B-Instruct"))
    start = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    assert time.perf_counter() - start < 2.0
    assert _text_config(model.config).num_hidden_layers <= 4


# ----------------------------------------------------------------------------------------------------------
# Tokenizer and chat templates
# ----------------------------------------------------------------------------------------------------------


def test_tokenizer_is_small_deterministic_and_keeps_specials() -> None:
    specials = ["<|im_start|>", "<|im_end|>", "<|image_pad|>"]
    first = build_tiny_tokenizer(specials, chat_template="{{ messages }}", eos_token="<|im_end|>")
    second = build_tiny_tokenizer(specials, chat_template="{{ messages }}", eos_token="<|im_end|>")
    other = build_tiny_tokenizer(specials, chat_template="{{ messages }}", eos_token="<|im_end|>", seed=3)
    assert 300 <= len(first) <= 500
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert first.backend_tokenizer.to_str() != other.backend_tokenizer.to_str()
    ids = first("hi<|image_pad|><|image_pad|>there", add_special_tokens=False).input_ids
    assert ids.count(first.convert_tokens_to_ids("<|image_pad|>")) == 2
    assert first.padding_side == "left"


EXPECTED_PROMPTS = {
    "llava": "USER: <image>\nWhat is shown in this image? ASSISTANT:",
    "idefics3": "<|im_start|>User:<image>What is shown in this image?<end_of_utterance>\nAssistant:",
    "qwen2_5_vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What is shown in this image?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "qwen3_vl": (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "What is shown in this image?<|im_end|>\n<|im_start|>assistant\n"
    ),
}


@pytest.mark.parametrize("model_type", sorted(EXPECTED_PROMPTS))
def test_chat_templates_match_real_structure(model_type: str) -> None:
    processor = build_tiny_processor(model_type)
    rendered = processor.apply_chat_template(_messages(PROMPT), add_generation_prompt=True)
    assert rendered == EXPECTED_PROMPTS[model_type]


def test_llava_template_continues_final_message() -> None:
    processor = build_tiny_processor("llava-hf/llava-1.5-7b-hf")
    messages = [*_messages(PROMPT), {"role": "assistant", "content": [{"type": "text", "text": "It is a"}]}]
    rendered = processor.apply_chat_template(messages, continue_final_message=True)
    assert rendered == "USER: <image>\nWhat is shown in this image? ASSISTANT: It is a"
    ids = processor.tokenizer(rendered).input_ids
    assert ids[0] == processor.tokenizer.bos_token_id  # Llama-style tokenizer prepends <s>


def test_idefics3_image_tokens_are_split_and_consistent() -> None:
    tiny = build_tiny_model("HuggingFaceTB/SmolVLM-256M-Instruct")
    inputs = _inputs(tiny, [PROMPT], [SINGLE_IMAGE])
    vision = tiny.config.vision_config
    per_tile = (vision.image_size // vision.patch_size) ** 2 // tiny.config.scale_factor**2
    assert tiny.processor.image_seq_len == per_tile
    image_positions = (inputs["input_ids"][0] == tiny.config.image_token_id).nonzero().flatten()
    assert len(image_positions) == inputs["pixel_values"].shape[1] * per_tile  # one group per sub-image
    assert inputs["pixel_values"].shape[1] > 1
    assert (image_positions.diff() > 1).any()  # groups separated by row/col tags: not contiguous


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


def test_forward_and_image_token_count(tiny: TinyVLM, single_inputs: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        output = tiny.model(**single_inputs)
    input_ids = single_inputs["input_ids"]
    assert output.logits.shape == (*input_ids.shape, _text_config(tiny.config).vocab_size)
    image_tokens = int((input_ids == tiny.config.image_token_id).sum())
    assert image_tokens > 0
    assert image_tokens == _image_feature_count(tiny, single_inputs)


def test_generate(tiny: TinyVLM, single_inputs: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        generated = tiny.model.generate(**single_inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == single_inputs["input_ids"].shape[1] + 3


def test_left_padded_batch_matches_single_runs(tiny: TinyVLM) -> None:
    texts = [PROMPT, "Zoom in on the bottom right part of the image and describe what you see there, please."]
    images = [SINGLE_IMAGE, OTHER_IMAGE]
    batch = _inputs(tiny, texts, images)
    assert tiny.processor.tokenizer.padding_side == "left"
    assert (batch["attention_mask"][:, 0] == 0).any()  # the prompts really differ in length
    with torch.no_grad():
        batch_logits = tiny.model(**batch).logits[:, -1]
        for row, (text, image) in enumerate(zip(texts, images, strict=True)):
            single_logits = tiny.model(**_inputs(tiny, [text], [image])).logits[0, -1]
            torch.testing.assert_close(batch_logits[row], single_logits, atol=1e-4, rtol=0)


def test_eager_attentions(tiny: TinyVLM, single_inputs: dict[str, torch.Tensor]) -> None:
    """Tiny models run transformers' default (SDPA) like checkpoints; eager returns the weights."""
    assert _text_config(tiny.config)._attn_implementation == "sdpa"
    tiny.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            output = tiny.model(**single_inputs, output_attentions=True)
    finally:
        tiny.model.set_attn_implementation("sdpa")
    text = _text_config(tiny.config)
    assert len(output.attentions) == text.num_hidden_layers
    sequence = single_inputs["input_ids"].shape[1]
    assert output.attentions[0].shape == (1, text.num_attention_heads, sequence, sequence)


def _randomized_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Norm weights and biases and every bias: the parameters HF initialises to a constant."""
    found = {}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if name == "bias" or (name == "weight" and is_norm(module)):
                found[f"{module_name}.{name}"] = parameter
    return found


@pytest.mark.parametrize("source", list(REFERENCES.values()))
def test_same_seed_same_weights_and_tokenizer(source: str) -> None:
    first, second, other = (build_tiny_model(source, seed=s) for s in (0, 0, 1))
    first_state, second_state = first.model.state_dict(), second.model.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert any(not torch.equal(first_state[k], v) for k, v in other.model.state_dict().items())
    # Norm weights and biases are seeded too: each one differs between seeds.
    other_randomized = _randomized_parameters(other.model)
    for name, parameter in _randomized_parameters(first.model).items():
        assert not torch.equal(parameter, other_randomized[name]), name
    first_tokenizer = first.processor.tokenizer.backend_tokenizer.to_str()
    assert first_tokenizer == second.processor.tokenizer.backend_tokenizer.to_str()


def test_norms_and_biases_are_off_their_init_values(tiny: TinyVLM) -> None:
    """HF inits norms to 1 (or 0) and biases to 0: with those, norm and bias mix-ups are invisible."""
    randomized = _randomized_parameters(tiny.model)
    norm_weights = [n for n in randomized if not n.endswith("bias")]
    assert norm_weights, "the model has norms, they must be found"
    for name, parameter in randomized.items():
        assert parameter.numel() == 1 or parameter.std() > 0.01, f"{name} is (nearly) constant"
    # No other parameter is left constant either (a new family's layer scale or latent init would show here).
    for name, parameter in tiny.model.named_parameters():
        assert parameter.numel() == 1 or parameter.std() > 0, f"{name} is constant"


def test_q_k_v_biases_are_random_where_the_architecture_has_them() -> None:
    decoder = build_tiny_model(REFERENCES["qwen2_5_vl"]).model.get_decoder()
    attention = decoder.layers[0].self_attn
    for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
        assert projection.bias is not None and projection.bias.abs().max() > 0.01
    assert attention.o_proj.bias is None  # which modules have a bias is the architecture's, unchanged


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("source", list(REFERENCES.values()))
def test_randomized_models_stay_finite_in_half_precision(source: str, dtype: torch.dtype) -> None:
    tiny = build_tiny_model(source, dtype=dtype)
    reference = build_tiny_model(source)
    with torch.no_grad():
        logits = tiny.model(**_inputs(tiny, [PROMPT], [SINGLE_IMAGE])).logits
        reference_logits = reference.model(**_inputs(reference, [PROMPT], [SINGLE_IMAGE])).logits
    assert torch.isfinite(logits).all()
    # The half-precision build is the rounded fp32 build (norm/bias noise is drawn in fp32): within 5% of the
    # logits' scale (measured: bf16 3%, fp16 0.7%), where another random draw moves them by about 100%.
    scale = max(1.0, float(reference_logits.abs().max()))
    torch.testing.assert_close(logits.float(), reference_logits, atol=0.05 * scale, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Size coincidences
# ----------------------------------------------------------------------------------------------------------


def test_probe_sizes_are_the_harness_probe_sizes() -> None:
    from vlmforge.harness.probes import PROBE_SIZES

    assert tuple(PROBE_IMAGE_SIZES) == tuple(PROBE_SIZES)


def test_tiny_sizes_do_not_coincide(tiny: TinyVLM) -> None:
    image_tokens = probe_image_tokens(tiny.processor, tiny.config)
    assert image_tokens and all(count > 0 for count in image_tokens.values())
    check_distinct_sizes(tiny.config, image_tokens)  # build_tiny_model ran it too; here it is explicit


def test_coincidence_guard_fires_on_crafted_config() -> None:
    config = shrink_config(load_reference_config("Qwen/Qwen3-VL-2B-Instruct"))
    check_distinct_sizes(config, {"56x56": 4})
    text = _text_config(config)
    kv_width = text.num_key_value_heads * text.head_dim
    config.vision_config.hidden_size = kv_width
    with pytest.raises(
        DimensionCoincidenceError, match=rf"kv_heads\*head_dim == vision_config.hidden_size == {kv_width}"
    ):
        check_distinct_sizes(config)
    config.vision_config.hidden_size = 32
    with pytest.raises(DimensionCoincidenceError, match=r"hidden_size == image tokens \(56x56\)"):
        check_distinct_sizes(config, {"56x56": text.hidden_size})


def test_forced_equalities_are_not_coincidences() -> None:
    # Qwen2.5-VL derives head_dim = hidden // heads (no head_dim field); llava's decoder is MHA (kv == q).
    for source in (REFERENCES["qwen2_5_vl"], REFERENCES["llava"]):
        check_distinct_sizes(shrink_config(load_reference_config(source)))


@pytest.mark.parametrize("model_type", ["qwen2_vl", "llava_next", "idefics2"])
def test_other_families_build_from_defaults(model_type: str) -> None:
    tiny = build_tiny_model(model_type)
    inputs = _inputs(tiny, [PROMPT], [SINGLE_IMAGE])
    with torch.no_grad():
        tiny.model(**inputs)
    image_tokens = int((inputs["input_ids"] == tiny.config.image_token_id).sum())
    assert image_tokens == _image_feature_count(tiny, inputs)
