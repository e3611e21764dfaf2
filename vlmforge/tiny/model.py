"""Tiny random VLMs: a real HF ``*ForConditionalGeneration`` with shrunk config and a real processor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from transformers import AutoModelForImageTextToText, PretrainedConfig, PreTrainedModel, ProcessorMixin

from .pipeline import tiny_recipe
from .processor import processor_for_config

__all__ = ["TinyVLM", "build_tiny_model", "model_class_for"]


@dataclass(frozen=True)
class TinyVLM:
    """A tiny model with its processor.

    Attributes:
        model: the HF model, eval mode, eager attention, random weights fixed by the seed.
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
) -> TinyVLM:
    """Build a tiny random model + processor for a stored checkpoint id, a model_type or a config.

    Steps: tiny tokenizer -> token ids -> :func:`shrink_config` -> model class -> processor. Everything is
    offline and deterministic: the same ``seed`` gives identical weights and an identical tokenizer.
    """
    recipe = tiny_recipe(checkpoint_or_config, seed=seed)
    _set_dtype(recipe.config, dtype)
    cls = model_class_for(recipe.config)
    # Fork the global RNG so building a model neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls._from_config(recipe.config, attn_implementation="eager", dtype=dtype)
    model.eval()
    processor = processor_for_config(model.config, recipe.tokenizer)
    return TinyVLM(model=model, processor=processor, config=model.config, reference=recipe.reference)
