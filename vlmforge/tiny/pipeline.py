"""reference -> tiny tokenizer -> token ids -> shrunk config: shared by the model and processor builders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerFast

from .recipes import TokenizerRecipe, tokenizer_recipe
from .reference import load_reference_config, reference_checkpoints
from .shrink import DEFAULT_LIMITS, ShrinkLimits, shrink_config
from .tokenizer import build_tiny_tokenizer

__all__ = ["TinyRecipe", "resolve_reference", "tiny_recipe"]


def resolve_reference(checkpoint_or_config: str | PretrainedConfig) -> tuple[PretrainedConfig, str]:
    """A real-size config and a label for it.

    In order: a local checkpoint directory (its ``config.json``); a stored reference checkpoint id;
    an ``org/name`` hub id whose config is in the local Hugging Face cache (never downloads); any
    other string is a model_type and gets transformers' own default config (``AutoConfig.for_model``).
    A config object is used as is.
    """
    if isinstance(checkpoint_or_config, PretrainedConfig):
        label = checkpoint_or_config.name_or_path or checkpoint_or_config.model_type
        return checkpoint_or_config, label
    name = checkpoint_or_config
    if (Path(name).expanduser() / "config.json").is_file():
        return AutoConfig.from_pretrained(Path(name).expanduser(), local_files_only=True), name
    if "/" in name:
        if name in reference_checkpoints():
            return load_reference_config(name), name
        try:
            return AutoConfig.from_pretrained(name, local_files_only=True), name
        except OSError:
            return load_reference_config(name), name  # raises the error listing the stored ids
    return AutoConfig.for_model(name), name


@dataclass(frozen=True)
class TinyRecipe:
    """All that is decided before instantiating a tiny model: tokenizer recipe, token ids, config."""

    reference: str
    real_config: PretrainedConfig
    tokens: TokenizerRecipe
    tokenizer: PreTrainedTokenizerFast
    token_ids: dict[str, int]
    config: PretrainedConfig


def tiny_recipe(
    checkpoint_or_config: str | PretrainedConfig, *, seed: int = 0, limits: ShrinkLimits = DEFAULT_LIMITS
) -> TinyRecipe:
    """Run tokenizer -> token ids -> shrink for a checkpoint id, a model_type or a config.

    ``limits`` sets the tiny sizes (benchmarks build larger models from the same recipe).
    """
    real_config, reference = resolve_reference(checkpoint_or_config)
    tokens = tokenizer_recipe(real_config)
    tokenizer = build_tiny_tokenizer(seed=seed, **tokens.tokenizer_kwargs())
    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.token_fields.items()}
    config = shrink_config(real_config, vocab_size=len(tokenizer), token_ids=token_ids, limits=limits)
    config.name_or_path = f"tiny-random/{reference}"
    return TinyRecipe(reference, real_config, tokens, tokenizer, token_ids, config)
