"""Deterministic probe inputs and the instrumentation the checks share.

Probe images are synthetic (seeded noise with a few shapes) so every run of the harness feeds the
same pixels; their sizes differ on purpose, so batching checks exercise padding and different
image-token counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageOps

from vlmforge.core.roles import ATTENTION
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.versions import without_cache
from vlmforge.harness.compare import CheckFailure

PROBE_PROMPTS = (
    "Describe the image.",
    "What color is the square in the top left corner of this picture?",
    "How many shapes are there?",
)
PROBE_SIZES = ((56, 56), (84, 56), (40, 72))
#: The image sides (px, inclusive) the property tests draw from: small enough for one cell of any patch
#: grid, large enough that the tiny processors resize down.
IMAGE_SIDES = (16, 112)


def probe_image(width: int = 56, height: int = 56, *, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic synthetic image: seeded noise plus a rectangle and an ellipse."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy(), "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 3, height // 3), fill=(220, 30, 30))
    draw.ellipse((width // 2, height // 2, width - 1, height - 1), fill=(30, 30, 220))
    return image.convert(mode) if mode != "RGB" else image


def image_token_count(vlm: HookedVLM, inputs: Any) -> int:
    """The number of image tokens in processed ``inputs`` (all rows)."""
    return int(vlm.adapter.image_token_mask(inputs).sum())


# Image sizes spanning the property tests' range (16-112 px a side): every whole aspect ratio from 1:7 to
# 7:1, the smallest and largest square and the probe sizes, so that a processor whose per-image output
# depends on size or aspect ratio (PerceptionLM's tile grid follows the aspect ratio) meets sizes it
# cannot stack.
MIXED_SIZES = (
    *((16 * k, 16) for k in range(1, 8)),
    *((16, 16 * k) for k in range(2, 8)),
    (112, 112),
    *PROBE_SIZES,
)


def probe_batch(count: int = 2, *, mixed_sizes: bool = True) -> tuple[list[str], list[Image.Image]]:
    """``count`` different prompts with different images (count <= 3).

    Args:
        mixed_sizes: the images have different sizes; False gives them all the first probe size
            (different pixels still), for a family whose processor batches one image size only
            (``FamilySpec.batches_mixed_image_sizes``).
    """
    prompts = list(PROBE_PROMPTS[:count])
    sizes = PROBE_SIZES[:count] if mixed_sizes else [PROBE_SIZES[0]] * count
    images = [probe_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    return prompts, images


def vlm_probe_batch(vlm: HookedVLM, count: int = 2) -> tuple[list[str], list[Image.Image]]:
    """:func:`probe_batch` with the image sizes ``vlm``'s processor batches (its spec declares whether
    images of different sizes go in one batch)."""
    return probe_batch(count, mixed_sizes=vlm.adapter.spec.batches_mixed_image_sizes)


def single_probe(vlm: HookedVLM) -> Any:
    """The processed single-image probe most checks run on (prompt 1, a 56x56 image)."""
    return vlm.prepare_messages(PROBE_PROMPTS[1], probe_image(56, 56))


def text_only_probe(vlm: HookedVLM) -> Any:
    """The single probe's question without its image: chat-templated text only, no pixel inputs.

    Built through the family's own processor (so the template and any text-side inputs such as
    ``mm_token_type_ids`` are what the model expects), with no image tokens and no ``pixel_values``.
    """
    messages = [{"role": "user", "content": [{"type": "text", "text": PROBE_PROMPTS[1]}]}]
    text = vlm.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    try:
        inputs = vlm.processor(text=[text], return_tensors="pt")
    except (ValueError, TypeError):
        # Some processors refuse a prompt without images (GOT-OCR2): its tokenizer gives the same text ids.
        inputs = vlm.processor.tokenizer([text], return_tensors="pt")
    return {key: value.to(vlm.device) for key, value in inputs.items() if isinstance(value, torch.Tensor)}


def other_image_probe(vlm: HookedVLM) -> Any:
    """The single probe's prompt with the probe image's negative (same size, every pixel inverted): the
    control of a family whose model needs an image (spec ``requires_image``). A negative, not another
    noise seed: a resampler that pools the patches barely tells two noise images apart."""
    return vlm.prepare_messages(PROBE_PROMPTS[1], ImageOps.invert(probe_image(56, 56)))


@dataclass
class AttentionCall:
    """What one decoder layer's attention module received (the first forward pass only)."""

    layer: int
    hidden_states: torch.Tensor  # [B, L, D]
    attention_mask: torch.Tensor | None  # additive [B, 1, L, L] under eager; None / bool under SDPA
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin), each [B, L, d_h]
    args: tuple = ()  # the call exactly as made, to re-run the module on the same inputs
    kwargs: dict = field(default_factory=dict)


@contextlib.contextmanager
def recorded_attention_calls(vlm: HookedVLM) -> Iterator[list[AttentionCall]]:
    """Record each layer's first attention call in the block; the list is filled (layer order) at exit."""
    calls: dict[int, AttentionCall] = {}
    handles = []
    for layer, attn in enumerate(vlm.adapter.lm_attn):
        if attn is None:  # a hybrid decoder's layer without softmax attention
            continue
        if vlm.adapter.recompute_absence(layer) is not None:
            continue  # attends with another layer's keys: nothing of its own to recompute (not_recomputed)

        def record(_module: Any, args: tuple, kwargs: dict, layer: int = layer) -> None:
            if layer not in calls:
                calls[layer] = AttentionCall(
                    layer,
                    args[0] if args else kwargs["hidden_states"],
                    kwargs.get("attention_mask"),
                    vlm.adapter.call_position_embeddings(
                        layer, args[0] if args else kwargs["hidden_states"], kwargs
                    ),
                    args,
                    dict(kwargs),
                )

        handles.append(attn.register_forward_pre_hook(record, with_kwargs=True))
    recorded: list[AttentionCall] = []
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
    recorded += [calls[layer] for layer in sorted(calls)]


def not_recomputed(vlm: HookedVLM) -> str:
    """The layers whose attention is not recomputed and why, as a check detail ('' when none).

    A layer attending with another layer's keys (``spec.attention.kv_shared``) is left out of every
    attention comparison; the check passes on the others and says which layers it did not cover.
    """
    reasons = {
        layer: reason
        for layer in range(vlm.lm_num_layers)
        if vlm.adapter.absence(ATTENTION, layer) is None
        and (reason := vlm.adapter.recompute_absence(layer)) is not None
    }
    if not reasons:
        return ""
    layers = ", ".join(map(str, reasons))
    return (
        f"layers {layers} not applicable: they attend with another layer's keys and values "
        f"(spec.attention.kv_shared = {vlm.adapter.spec.attention.kv_shared!r})"
    )


def attentions_by_layer(vlm: HookedVLM, attentions: Any) -> dict[int, torch.Tensor]:
    """``output_attentions`` entries keyed by decoder layer, for the layers with softmax attention.

    transformers reports one entry per decoder layer (cross-attention layers included), or, in a hybrid
    decoder whose other layers compute no weights, one per softmax-attention layer.

    Raises:
        CheckFailure: no attentions, or a count matching neither.
    """
    layers = vlm.hook_layers("attn.hook_pattern")
    count = 0 if attentions is None else len(attentions)
    if attentions is not None and count == vlm.lm_num_layers:
        return {layer: attentions[layer] for layer in layers}
    if attentions is not None and count == len(layers):
        return dict(zip(layers, attentions, strict=True))
    raise CheckFailure(
        f"output_attentions returned {count} entries for {vlm.lm_num_layers} layers "
        f"({len(layers)} with softmax attention)"
    )


def run_eager_with_attention_inputs(vlm: HookedVLM, inputs: Any) -> tuple[Any, list[AttentionCall]]:
    """Forward with ``output_attentions``/``output_hidden_states``; record each layer's attention inputs."""
    with recorded_attention_calls(vlm) as calls:
        outputs = vlm.forward(inputs, output_attentions=True, output_hidden_states=True)
    return outputs, calls


def eager_weights(vlm: HookedVLM, call: AttentionCall, eager_mask: torch.Tensor | None) -> torch.Tensor:
    """Transformers' own eager attention weights [B, H, L, L] on exactly the inputs of ``call``.

    ``call`` may come from a pass under any implementation (SDPA's hidden states differ from eager's
    in the last bits, so a separate eager forward is no exact reference for it); the layer's
    attention module is re-run under eager with ``eager_mask``, the additive mask an eager pass of the
    same inputs gave the layer (masks depend on positions and padding only). The KV cache is left
    out so the re-run neither extends nor reads it.
    """
    kwargs = {**without_cache(call.kwargs), "attention_mask": eager_mask}
    with vlm.attention_implementation("eager"), torch.no_grad():
        output = vlm.adapter.get_lm_attn(call.layer)(*call.args, **kwargs)
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if not isinstance(weights, torch.Tensor):
        raise RuntimeError(f"layer {call.layer}'s attention module returned no weights under eager")
    return weights


def visible_logits(vlm: HookedVLM, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` [..., vocab] with the family's masked columns (``spec.logit_mask``) set to 0.

    The model pins those columns to the dtype minimum by design: compared as numbers they would scale
    every relative tolerance to ~1e34 and hide any real difference. Zeroed rather than dropped, so the
    vocab index of a failure is still a token id. ``logits`` itself when no mask is declared.
    """
    mask = vlm.adapter.get_logit_mask()
    if mask is None:
        return logits
    hidden = logits.clone()
    hidden[..., mask.to(logits.device)] = 0
    return hidden


def language_model_inputs_embeds(vlm: HookedVLM, inputs: Any) -> torch.Tensor:
    """The ``inputs_embeds`` the decoder receives (text embeddings with image features merged in).

    A decoder that embeds its own ``input_ids`` is called without ``inputs_embeds`` (Chameleon: the top
    model *is* the decoder, and it merges the image into the embeddings inside its forward); then the
    merged embeddings are what its first layer receives (``lm.blocks.0.hook_resid_pre``).
    """
    return _decoder_input(vlm, inputs)[0]


def _decoder_input(vlm: HookedVLM, inputs: Any) -> tuple[torch.Tensor, bool]:
    """(:func:`language_model_inputs_embeds`, whether the decoder was called with ``inputs_embeds``)."""
    captured: list[torch.Tensor] = []

    def record(_module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and not captured:
            captured.append(embeds.detach().clone())

    first_layer = "lm.blocks.0.hook_resid_pre"
    handle = vlm.adapter.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with vlm.run_with_cache(first_layer):
            vlm.forward(inputs)
    finally:
        handle.remove()
    if captured:
        return captured[0], True
    if first_layer not in vlm.cache:
        raise RuntimeError("the language model was called neither with inputs_embeds nor its first layer")
    return vlm.cache[first_layer], False


def _text_only_first_layer_input(vlm: HookedVLM, inputs: Any) -> torch.Tensor:
    """What the decoder's first layer receives for ``inputs``' tokens alone (the decoder run on its own).

    The reference for a decoder that embeds its own ``input_ids`` and receives the image another way
    (Kosmos-2's text model takes ``image_embeds`` and a position mask): its first layer's input adds
    position embeddings and an embedding scale to the token embeddings, so only the same decoder without
    the image tells which positions the image changed.
    """
    first_layer = "lm.blocks.0.hook_resid_pre"
    with torch.no_grad(), vlm.run_with_cache(first_layer):
        vlm.adapter.language_model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
    return vlm.cache[first_layer]


def vision_written_positions(vlm: HookedVLM, inputs: Any) -> torch.Tensor:
    """[B, L] bool: the positions whose decoder input is not the text embedding of their token.

    Those are the positions the vision side wrote into ``inputs_embeds``: the image features, plus any
    marker tokens a family embeds from its vision side (Ovis2's visual indicators).
    """
    merged, as_embeds = _decoder_input(vlm, inputs)
    if as_embeds:
        text = vlm.adapter.language_model.get_input_embeddings()(inputs["input_ids"])
    else:
        text = _text_only_first_layer_input(vlm, inputs)
    return (merged != text.to(merged.device)).any(dim=-1)


def cached_forward(
    vlm: HookedVLM, hook_types: Sequence[str], inputs: Any, **forward_kwargs: Any
) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    """Forward ``inputs`` caching ``hook_types``: the model output and one {hook type: value} per layer.

    A layer's dict holds the hook types that layer has (a MoE layer has no ``mlp.hook_pre``).
    """
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in hook_types if vlm.hook_layers(hook)]):
        outputs = vlm.forward(inputs, **forward_kwargs)
    per_layer = [
        {hook: vlm.cache[name] for hook in hook_types if (name := f"lm.blocks.{layer}.{hook}") in vlm.cache}
        for layer in range(vlm.lm_num_layers)
    ]
    return outputs, per_layer
