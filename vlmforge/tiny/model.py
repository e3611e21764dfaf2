"""Tiny random VLMs: a real HF ``*ForConditionalGeneration`` with shrunk config and a real processor."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText, PretrainedConfig, PreTrainedModel, ProcessorMixin

from .agreement import check_image_token_agreement
from .dimensions import DimensionCoincidenceError, check_distinct_sizes, named_sizes
from .pipeline import tiny_recipe
from .processor import processor_for_config
from .shrink import DEFAULT_LIMITS, ShrinkLimits
from .weights import randomize_norms_and_biases

__all__ = ["PROBE_IMAGE_SIZES", "TinyVLM", "build_tiny_model", "model_class_for", "probe_image_tokens"]

# (width, height) of the probe images the conformance harness feeds (vlmforge.harness.probes.PROBE_SIZES;
# tiny sits below the harness and cannot import it, a test keeps the two equal).
PROBE_IMAGE_SIZES = ((56, 56), (84, 56), (40, 72))


@dataclass(frozen=True)
class TinyVLM:
    """A tiny model with its processor.

    Attributes:
        model: the HF model, eval mode, default attention implementation, random weights fixed by the seed.
        processor: the family's real HF processor (tiny tokenizer, small images).
        config: the tiny config (``model.config``).
        reference: the checkpoint id or model_type it was shrunk from.
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    config: PretrainedConfig
    reference: str


def model_class_for(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The generation class: the config's ``architectures`` entry, else the image-text-to-text mapping."""
    for name in config.architectures or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return AutoModelForImageTextToText._model_mapping[type(config)]


def _set_dtype(config: PretrainedConfig, dtype: torch.dtype) -> None:
    # Real configs carry dtype="bfloat16" in sub-configs; some sub-models are built from their own sub-config,
    # so every level must agree with the requested dtype.
    config.dtype = dtype
    for key in config.sub_configs:
        sub_config = getattr(config, key, None)
        if isinstance(sub_config, PretrainedConfig):
            _set_dtype(sub_config, dtype)


def build_tiny_model(
    checkpoint_or_config: str | PretrainedConfig,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    limits: ShrinkLimits = DEFAULT_LIMITS,
) -> TinyVLM:
    """Build a tiny random model + processor for a stored checkpoint id, a model_type or a config.

    Steps: tiny tokenizer -> token ids -> :func:`shrink_config` -> model class -> random norms and biases
    (:func:`randomize_norms_and_biases`) -> processor -> image-token agreement check -> size check.
    Everything is offline and deterministic: the same ``seed`` gives identical weights and tokenizer.

    Raises:
        ImageTokenMismatchError: the processor writes a different number of image tokens for a probe image
            than the model makes image features (:func:`check_image_token_agreement`, naming the config keys).
        DimensionCoincidenceError: two tiny sizes are equal by accident (:func:`check_distinct_sizes`), also
            after shrinking again with the probe images' token counts in ``limits.avoid_sizes``.
    """
    tiny = _build(checkpoint_or_config, seed, dtype, limits)
    image_tokens = probe_image_tokens(tiny.processor, tiny.config)
    try:
        check_distinct_sizes(tiny.config, image_tokens)
    except DimensionCoincidenceError:
        # The image-token counts exist only once the processor does; a width that happens to equal one is
        # moved by shrinking again with the counts to avoid (once: the limits then state them).
        avoid = tuple(sorted(set(image_tokens.values())))
        if limits.avoid_sizes or not avoid or not _clashes_with(tiny.config, image_tokens):
            raise
        tiny = _build(checkpoint_or_config, seed, dtype, dataclasses.replace(limits, avoid_sizes=avoid))
        check_distinct_sizes(tiny.config, probe_image_tokens(tiny.processor, tiny.config))
    return tiny


def _clashes_with(config: PretrainedConfig, image_tokens: dict[str, int]) -> bool:
    """Whether a size of ``config`` other than the image-token counts equals one of those counts."""
    counts = set(image_tokens.values())
    return any(size.value in counts for size in named_sizes(config) if size.group != "image_tokens")


def _build(
    checkpoint_or_config: str | PretrainedConfig, seed: int, dtype: torch.dtype, limits: ShrinkLimits
) -> TinyVLM:
    """Recipe -> model -> processor, with the image-token agreement checked (not the size check)."""
    recipe = tiny_recipe(checkpoint_or_config, seed=seed, limits=limits)
    _set_dtype(recipe.config, dtype)
    cls = model_class_for(recipe.config)
    # Fork the global RNG so building a model neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # transformers' default implementation (SDPA where the model supports it), as a checkpoint loads.
        model = cls._from_config(recipe.config, dtype=dtype)
        # HF init leaves norms at 1 and biases at 0, which makes norm and bias mix-ups invisible.
        randomize_norms_and_biases(model)
    model.eval()
    processor = processor_for_config(model.config, recipe.tokenizer)
    # Before the size check: a disagreement here would make its image-token counts meaningless.
    check_image_token_agreement(model, processor, PROBE_IMAGE_SIZES[:2])
    return TinyVLM(model=model, processor=processor, config=model.config, reference=recipe.reference)


def probe_image_tokens(processor: ProcessorMixin, config: PretrainedConfig) -> dict[str, int]:
    """Image-token count of a one-image chat prompt for each probe size (``{"56x56": 4, ...}``).

    Empty when the config has no image token id or the processor cannot process an image (with a warning);
    a size whose prompt has no image token is left out. Counts depend on the image size only, so the probe
    images are blank.
    """
    image_token_id = getattr(config, "image_token_id", None)
    if not isinstance(image_token_id, int):
        return {}
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    counts = {}
    for width, height in PROBE_IMAGE_SIZES:
        image = Image.new("RGB", (width, height), (127, 127, 127))
        try:
            input_ids = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"]
        except Exception as error:  # any processor failure means "count unknown"
            # A processor that cannot handle an image fails where it is used (the harness says why); here it
            # only means the image-token counts cannot take part in the size check.
            warnings.warn(f"image-token count unknown, not size-checked: {error!r}", stacklevel=2)
            return {}
        if count := int((input_ids == image_token_id).sum()):
            counts[f"{width}x{height}"] = count
    return counts
