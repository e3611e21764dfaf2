"""Guard against tiny dimensions that are equal by accident.

When two sizes of a tiny model coincide (vocab == hidden, heads * head_dim == hidden, image tokens ==
hidden...), code that uses one in place of the other, or transposes a ``[tokens, hidden]`` matrix, still runs
and still gives the right numbers on the tiny model, while it fails on a real checkpoint. The factory
therefore refuses a tiny config whose key sizes coincide, except where the architecture forces equality.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transformers import PretrainedConfig

from .shrink import _FFN_KEYS, _HEAD_KEYS, _KV_HEAD_KEYS, _width_key

__all__ = ["DimensionCoincidenceError", "NamedSize", "check_distinct_sizes", "named_sizes"]


class DimensionCoincidenceError(ValueError):
    """Two sizes of a tiny model are equal although the architecture does not force it."""


@dataclass(frozen=True)
class NamedSize:
    """One size of the tiny model; sizes in the same ``group`` may be equal (e.g. all image-token counts)."""

    name: str
    value: int
    group: str


def _int(node: Mapping[str, object], key: str) -> int | None:
    value = node.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _decoder_sizes(text: PretrainedConfig) -> list[NamedSize]:
    data = text.to_dict()
    keys = ("vocab_size", "hidden_size")
    sizes = [NamedSize(f"text.{k}", v, f"text.{k}") for k in keys if (v := _int(data, k))]
    # Each FFN field is its own group: a routed expert as wide as the shared expert (or the dense MLP)
    # would let code that reads one in place of the other pass.
    sizes += [NamedSize(f"text.{k}", v, f"text.{k}") for k in _FFN_KEYS if (v := _int(data, k))]
    hidden = _int(data, "hidden_size")
    heads = next((v for k in _HEAD_KEYS if (v := _int(data, k))), None)
    if hidden is None or heads is None:
        return sizes
    kv_heads = next((v for k in _KV_HEAD_KEYS if (v := _int(data, k))), heads)
    explicit = _int(data, "head_dim")
    head_dim = explicit or hidden // heads
    # Forced equalities share a group: without an explicit head_dim field the modeling code derives
    # head_dim = hidden // heads (heads * head_dim == hidden by construction), and under MHA the KV width is
    # the query width.
    query_group = "text.hidden_size" if explicit is None else "text.query"
    kv_group = query_group if kv_heads == heads else "text.kv"
    sizes.append(NamedSize("text.heads*head_dim", heads * head_dim, query_group))
    sizes.append(NamedSize("text.kv_heads*head_dim", kv_heads * head_dim, kv_group))
    return sizes


def _encoder_sizes(config: PretrainedConfig, text: PretrainedConfig, path: str = "") -> list[NamedSize]:
    sizes: list[NamedSize] = []
    for key in config.sub_configs:
        sub = getattr(config, key, None)
        if not isinstance(sub, PretrainedConfig) or sub is text:
            continue
        name = f"{path}{key}"
        data = sub.to_dict()
        # All encoders share one size budget (ShrinkLimits.encoder_*): equal widths among them are by design.
        # The encoder budget (32) is below every decoder width the shrinker picks, so an encoder at the
        # decoder width was tied to it by its config class (Idefics2's perceiver works in the decoder width).
        if width := _int(data, _width_key(data)):
            group = "text.hidden_size" if width == _int(text.to_dict(), "hidden_size") else "encoder.width"
            sizes.append(NamedSize(f"{name}.{_width_key(data)}", width, group))
        sizes += [NamedSize(f"{name}.{k}", v, f"{name}.{k}") for k in _FFN_KEYS if (v := _int(data, k))]
        sizes += _encoder_sizes(sub, text, f"{name}.")
    return sizes


def named_sizes(config: PretrainedConfig, image_tokens: Mapping[str, int] | None = None) -> list[NamedSize]:
    """The sizes that must not coincide: decoder vocab, width, FFN, query and KV widths; encoder widths and
    FFNs; the image-token count of each probe image (``image_tokens``: probe name -> count)."""
    text = config.get_text_config(decoder=True)
    sizes = _decoder_sizes(text)
    if text is not config:
        sizes += _encoder_sizes(config, text)
    sizes += [NamedSize(f"image tokens ({k})", v, "image_tokens") for k, v in (image_tokens or {}).items()]
    return sizes


def check_distinct_sizes(config: PretrainedConfig, image_tokens: Mapping[str, int] | None = None) -> None:
    """Raise if two sizes of :func:`named_sizes` from different groups are equal.

    Raises:
        DimensionCoincidenceError: lists every coincidence, e.g. ``text.hidden_size == vision_config.
            hidden_size == 64``.
    """
    by_value: dict[int, list[NamedSize]] = {}
    for size in named_sizes(config, image_tokens):
        by_value.setdefault(size.value, []).append(size)
    clashes = [
        " == ".join(s.name for s in group) + f" == {value}"
        for value, group in sorted(by_value.items())
        if len({s.group for s in group}) > 1
    ]
    if clashes:
        raise DimensionCoincidenceError(
            f"tiny config {config.name_or_path or config.model_type!r} has sizes that are equal by accident "
            f"({'; '.join(clashes)}): code that confuses them would pass on it. Change the tiny sizes "
            "(vlmforge.tiny.ShrinkLimits) so they differ."
        )
