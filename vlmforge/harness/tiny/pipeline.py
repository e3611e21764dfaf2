"""reference -> tiny tokenizer -> token ids -> shrunk config: shared by the model and processor builders."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerFast

from .family import FamilySpec, family_spec
from .reference import load_reference_config
from .shrink import shrink_config
from .tokenizer import build_tiny_tokenizer

__all__ = ["TinyRecipe", "resolve_reference", "tiny_recipe"]


def resolve_reference(checkpoint_or_config: str | PretrainedConfig) -> tuple[PretrainedConfig, str]:
    """A real-size config and a label for it.

    ``"org/name"`` loads a stored reference config; any other string is a model_type and gets transformers'
    own default config (``AutoConfig.for_model``); a config object is used as is.
    """
    if isinstance(checkpoint_or_config, PretrainedConfig):
        label = checkpoint_or_config.name_or_path or checkpoint_or_config.model_type
        return checkpoint_or_config, label
    if "/" in checkpoint_or_config:
        return load_reference_config(checkpoint_or_config), checkpoint_or_config
    return AutoConfig.for_model(checkpoint_or_config), checkpoint_or_config


@dataclass(frozen=True)
class TinyRecipe:
    """Everything decided before instantiating a tiny model: spec, tokenizer, token ids, tiny config."""

    reference: str
    real_config: PretrainedConfig
    spec: FamilySpec
    tokenizer: PreTrainedTokenizerFast
    token_ids: dict[str, int]
    config: PretrainedConfig


def tiny_recipe(checkpoint_or_config: str | PretrainedConfig, *, seed: int = 0) -> TinyRecipe:
    """Run tokenizer -> token ids -> shrink for a checkpoint id, a model_type or a config."""
    real_config, reference = resolve_reference(checkpoint_or_config)
    spec = family_spec(real_config)
    tokenizer = build_tiny_tokenizer(seed=seed, **spec.tokenizer_kwargs())
    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in spec.token_fields.items()}
    config = shrink_config(real_config, vocab_size=len(tokenizer), token_ids=token_ids)
    config.name_or_path = f"tiny-random/{reference}"
    return TinyRecipe(reference, real_config, spec, tokenizer, token_ids, config)
