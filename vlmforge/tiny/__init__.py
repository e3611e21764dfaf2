"""Offline tiny random VLMs with real HF processors, shrunk from stored real configs.

Nothing here touches the network: reference configs and chat templates are stored data files, tokenizers are
trained in-process on a built-in corpus, weights are random under a seed.
"""

from vlmforge.core.runtime import register_model_builder

from .agreement import ImageTokenMismatchError, check_image_token_agreement
from .dimensions import DimensionCoincidenceError, check_distinct_sizes
from .model import PROBE_IMAGE_SIZES, TinyVLM, build_tiny_model, model_class_for, probe_image_tokens
from .pipeline import TinyRecipe, resolve_reference, tiny_recipe
from .processor import build_tiny_processor, processor_for_config
from .recipes import TokenizerRecipe, resolve_processor_classes, stored_families, tokenizer_recipe
from .reference import UnknownCheckpointError, load_reference_config, reference_checkpoints
from .shrink import ShrinkLimits, resample_layer_list, shrink_config
from .tokenizer import build_tiny_tokenizer
from .weights import randomize_norms_and_biases

__all__ = [
    "PROBE_IMAGE_SIZES",
    "DimensionCoincidenceError",
    "ImageTokenMismatchError",
    "ShrinkLimits",
    "TinyRecipe",
    "TinyVLM",
    "TokenizerRecipe",
    "UnknownCheckpointError",
    "build_tiny_model",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "check_distinct_sizes",
    "check_image_token_agreement",
    "load_reference_config",
    "model_class_for",
    "probe_image_tokens",
    "processor_for_config",
    "randomize_norms_and_biases",
    "reference_checkpoints",
    "resample_layer_list",
    "resolve_processor_classes",
    "resolve_reference",
    "shrink_config",
    "stored_families",
    "tiny_recipe",
    "tokenizer_recipe",
]


def _build_for_runtime(location: str, *, seed: int, dtype: object) -> tuple[object, object]:
    tiny = build_tiny_model(location, seed=seed, dtype=dtype)
    return tiny.model, tiny.processor


# HookedVLM.from_pretrained("tiny/<family>") builds through this (core does not import tiny).
register_model_builder("tiny", _build_for_runtime)
