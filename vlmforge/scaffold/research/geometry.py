"""Head geometry as the adapter derives it from the text config (hidden size, head counts, head dim)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from vlmforge.scaffold.research.config_values import as_int, config_value

__all__ = ["HeadGeometry"]


@dataclass(frozen=True)
class HeadGeometry:
    """The text config's head geometry; None where the config has no plain int for it.

    Attributes:
        hidden: ``hidden_size``.
        heads: ``num_attention_heads``.
        kv_heads: ``num_key_value_heads``, else ``heads`` (no GQA).
        explicit_head_dim: ``head_dim`` when the config sets it.
        head_dim: ``explicit_head_dim``, else ``hidden // heads``.
    """

    hidden: int | None
    heads: int | None
    kv_heads: int | None
    explicit_head_dim: int | None
    head_dim: int | None

    @classmethod
    def of(cls, text_config: PretrainedConfig) -> HeadGeometry:
        """Read the geometry off ``text_config``."""
        hidden = as_int(config_value(text_config, "hidden_size"))
        heads = as_int(config_value(text_config, "num_attention_heads"))
        explicit = as_int(config_value(text_config, "head_dim"))
        return cls(
            hidden=hidden,
            heads=heads,
            kv_heads=as_int(config_value(text_config, "num_key_value_heads")) or heads,
            explicit_head_dim=explicit,
            head_dim=explicit or (hidden // heads if hidden and heads else None),
        )
