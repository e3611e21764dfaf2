"""Generic shrinking of a (composite) HF config into a tiny, structurally faithful one.

The shrinker never looks at model names. It walks the sub-config tree, finds the decoder through
``config.get_text_config(decoder=True)``, treats every other sub-config as an encoder, and rewrites fields by
*field name* (``num_hidden_layers``/``depth``, ``num_key_value_heads``, ``layer_types``, ``*_indexes``,
``mrope_section``, ``*_token_id``...). A new family that follows transformers' naming conventions therefore
shrinks without code changes; that is also what the scaffolder relies on for families with no recipe.

Structure that adapters care about is preserved on purpose: the attention kind (MHA, MQA, GQA with its ratio
up to 4 and at least 2 KV groups), an explicit ``head_dim`` that is decoupled from
``hidden_size // num_attention_heads``, the repeating pattern of per-layer lists (sliding vs full attention,
windowed vs full ViT blocks), and layer *taps* such as DeepStack, which are remapped onto layers that still
exist instead of silently disappearing.

Sizes are also chosen so that mix-ups stay visible: a decoder whose config takes an explicit ``head_dim``
gets ``head_dim * heads != hidden`` even where the real checkpoint happens to have them equal, and no FFN is
as wide as its block. (Sizes that still coincide are caught by :mod:`vlmforge.tiny.dimensions`.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

__all__ = ["LATENT_COUNT_KEYS", "ShrinkLimits", "resample_layer_list", "shrink_config"]


@dataclass(frozen=True)
class ShrinkLimits:
    """Sizes of the tiny model. The defaults keep a 4-family test run well under a minute on 2 CPU cores."""

    text_hidden: int = 64
    text_layers: int = 4
    text_base_heads: int = 4
    encoder_hidden: int = 32
    encoder_layers: int = 2
    encoder_base_heads: int = 2
    max_head_dim: int = 16
    min_head_dim: int = 8
    # GQA keeps >= 2 KV groups of >= 2 heads (one group hides head -> group mapping bugs), so the ratio
    # is capped at max_query_heads // min_kv_heads = 4: ratios up to 4 stay exact, larger ones become 4
    # (still GQA). The exact ratio 8 of Qwen2.5-VL would need 16 heads; its Qwen2 decoder forces
    # hidden = heads * head_dim with head_dim >= min_head_dim, so hidden 128: that doubles the embeddings
    # and the real-vocabulary build time (test_shrunk_72b_config_builds_fast then nears its 2 s limit).
    min_kv_heads: int = 2
    max_query_heads: int = 8
    # Added to a real-coupled but explicit head_dim so that head_dim * heads != hidden (even: RoPE pairs).
    head_dim_offset: int = 4
    # Tiny prompts are 20-100 tokens: a real 4096-token window would make sliding layers indistinguishable
    # from full attention, so windows are cut to a size that actually masks something.
    sliding_window: int = 16
    # Image tokens per image of a learned-query resampler: not a power of two, unlike every width here.
    resampler_latents: int = 10
    experts: int = 4
    experts_per_token: int = 2


DEFAULT_LIMITS = ShrinkLimits()

_LAYER_COUNT_KEYS = ("num_hidden_layers", "depth", "num_layers", "n_layers")
_HEAD_KEYS = ("num_attention_heads", "num_heads", "n_heads")
_KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads")
_FFN_KEYS = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_dim")
_EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok",)
# Integer "the first/last k layers are special" fields, rescaled proportionally to the new depth.
_LAYER_THRESHOLD_KEYS = ("max_window_layers", "first_k_dense_replace")
# Encoder fields that must equal the decoder width because the encoder projects straight into it.
_DECODER_WIDTH_KEYS = ("out_hidden_size", "text_hidden_size")
# Pixel-shuffle / patch-merge factors: image grids must be divisible by them.
_MERGE_FACTOR_KEYS = ("scale_factor", "spatial_merge_size", "merge_size")
_ROPE_KEYS = ("rope_parameters", "rope_scaling")
# Learned-query resamplers (Idefics2's perceiver): the latent count is the number of image tokens per image.
LATENT_COUNT_KEYS = ("resampler_n_latents",)
_TOKEN_SUFFIXES = ("_token_id", "_token_index", "_token_ids")
_INDEX_LIST_SUFFIXES = ("_indexes", "_indices")


# ----------------------------------------------------------------------------------------------------------
# Per-layer lists
# ----------------------------------------------------------------------------------------------------------


def _smallest_period(values: Sequence[Any]) -> int:
    for period in range(1, len(values) + 1):
        if all(values[i] == values[i % period] for i in range(len(values))):
            return period
    return len(values)


def _compress(values: Sequence[Any], n: int) -> list[Any]:
    """Sample ``values`` into ``n`` buckets, preferring the globally rarest value present in each bucket.

    Preferring the minority keeps every *kind* of layer represented (the lone full-attention block of a
    windowed ViT, the few sliding layers after ``max_window_layers``, the DeepStack taps).
    """
    counts = Counter(values)
    out = []
    for j in range(n):
        bucket = values[(j * len(values)) // n : ((j + 1) * len(values)) // n]
        out.append(min(bucket, key=lambda v: (counts[v], bucket.index(v))))
    return out


def resample_layer_list(values: Sequence[Any], n: int) -> list[Any]:
    """Resample a per-layer list (``layer_types``, a full-attention mask) to ``n`` layers keeping its pattern.

    A list that repeats with a period ``p`` (at least twice) is treated as that period: repeated if
    ``p <= n``, compressed otherwise. A non-periodic list (e.g. full layers, then sliding layers) is
    compressed whole.
    """
    values = list(values)
    if n >= len(values):
        return values
    period = _smallest_period(values)
    if 2 * period <= len(values):
        pattern = values[:period]
        if period <= n:
            return [pattern[i % period] for i in range(n)]
        return _compress(pattern, n)
    return _compress(values, n)


def _remap_indexes(indexes: Sequence[int], old: int, new: int) -> list[int]:
    mask = [i in set(indexes) for i in range(old)]
    return [i for i, marked in enumerate(resample_layer_list(mask, new)) if marked]


def _remap_hidden_state_index(index: int, old: int, new: int) -> int:
    """Remap an index into ``hidden_states`` (``old + 1`` entries: embeddings + one per layer)."""
    if -(new + 1) <= index < 0:
        return index  # "k-th from the end" still means the same thing
    position = index if index >= 0 else old + 1 + index
    remapped = min(new, round(position * new / old))
    return remapped if index >= 0 else remapped - (new + 1)


# ----------------------------------------------------------------------------------------------------------
# Field helpers
# ----------------------------------------------------------------------------------------------------------


def _first_key(node: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if isinstance(node.get(k), int) and not isinstance(node.get(k), bool)), None)


def _round_to(value: float, multiple: int, minimum: int) -> int:
    return max(minimum, multiple * round(value / multiple))


def _split_proportionally(section: Sequence[int], total: int) -> list[int]:
    """Largest-remainder split of ``total`` with the proportions of ``section``; every part stays >= 1."""
    raw = [s * total / sum(section) for s in section]
    parts = [max(1, math.floor(r)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    i = 0
    while sum(parts) < total:
        parts[by_remainder[i % len(parts)]] += 1
        i += 1
    while sum(parts) > total:
        largest = max(range(len(parts)), key=lambda k: parts[k])
        parts[largest] -= 1
    return parts


@dataclass
class _Geometry:
    hidden: int
    head_dim: int


def _width_key(node: Mapping[str, Any]) -> str:
    # A tower with both `embed_dim` and `hidden_size` (Qwen2-VL's ViT) uses embed_dim as its width and
    # hidden_size as the width it projects to; everywhere else hidden_size is the width.
    return "embed_dim" if isinstance(node.get("embed_dim"), int) else "hidden_size"


def _choose_heads(heads: int, kv_heads: int, base_heads: int, limits: ShrinkLimits) -> tuple[int, int]:
    """Tiny (query heads, KV heads) with the real attention kind: MHA, MQA or GQA.

    GQA gets at least ``min_kv_heads`` KV groups, so a wrong head -> KV-group mapping (interleaved instead
    of repeated, or the reverse) changes the output; with a single KV head every mapping is correct.
    """
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    ratio = heads // kv_heads
    if ratio == 1:
        # MHA stays MHA: group size 1 is the real structure, and it still has >= 2 heads to mix up.
        new_heads = max(limits.min_kv_heads, base_heads)
        return new_heads, new_heads
    if kv_heads == 1:
        # MQA stays MQA: one KV head is the real structure, so any grouping is right on the real model too.
        new_heads = max(2, min(base_heads, limits.max_query_heads))
        return new_heads, 1
    # Keep the exact GQA ratio (it is part of the structure adapters must handle) when the query heads fit
    # under `max_query_heads`; otherwise the largest ratio that fits, which is still >= 2 (still GQA).
    new_ratio = min(ratio, max(2, limits.max_query_heads // limits.min_kv_heads))
    new_kv = max(limits.min_kv_heads, base_heads // new_ratio)
    return new_kv * new_ratio, new_kv


def _choose_head_dim(
    real: tuple[int, int, object], new_heads: int, coupled: int, decouple: bool, limits: ShrinkLimits
) -> tuple[int, int]:
    """The tiny (head_dim, width) for ``new_heads`` tiny heads whose coupled head_dim is ``coupled``.

    ``real`` is the real (width, heads, head_dim field). The width is ``new_heads * coupled`` unless a
    decoupled head_dim cannot move below ``min_head_dim``, in which case the width grows instead.
    """
    hidden, heads, real_head_dim = real
    width = new_heads * coupled
    if not isinstance(real_head_dim, int):
        # No explicit head_dim field: the modeling code derives head_dim = width // heads, so
        # head_dim * heads == width is forced by the architecture (e.g. Qwen2.5-VL's Qwen2 decoder).
        return coupled, width
    scale = real_head_dim * heads / hidden
    if scale == 1 and not decouple:
        return coupled, width
    if scale == 1:
        # The real checkpoint happens to have head_dim == hidden / heads, but its config class takes an
        # explicit head_dim that the modeling code honours: decouple it anyway, so a head_dim or attention
        # scale derived from hidden / heads is visible on the tiny model (as on real configs such as
        # Qwen3-VL-4B). The offset is even, so RoPE still rotates whole pairs.
        return coupled + limits.head_dim_offset, width
    # The real model decouples head_dim from hidden/heads (q_proj is not square): keep that property, in the
    # same direction, so code that assumes hidden == heads * head_dim is caught by the tiny model.
    head_dim = _round_to(coupled * scale, 4, limits.min_head_dim)
    if head_dim != coupled:
        return head_dim, width
    if scale > 1:
        return coupled + limits.head_dim_offset, width
    if coupled - limits.head_dim_offset >= limits.min_head_dim:
        return coupled - limits.head_dim_offset, width
    return coupled, new_heads * (coupled + limits.head_dim_offset)  # head_dim at its floor: widen instead


def _shrink_ffn(node: dict[str, Any], old_hidden: int, new_hidden: int) -> None:
    """Scale every FFN width with the model width (keeping its ratio, within [hidden / 2, 4 * hidden])."""
    for key in _FFN_KEYS:
        if isinstance(node.get(key), int) and node[key] > 0:
            scaled = _round_to(new_hidden * node[key] / old_hidden, 8, 8)
            scaled = min(4 * new_hidden, max(new_hidden // 2, scaled))
            # A square FFN (e.g. a default config whose ratio rounds to 1) would hide up/down mix-ups.
            node[key] = scaled + 8 if scaled == new_hidden else scaled


def _shrink_attention(
    node: dict[str, Any], hidden_budget: int, base_heads: int, limits: ShrinkLimits, *, decouple: bool = False
) -> _Geometry:
    """Rewrite width, heads, KV heads, head_dim and FFN widths; returns the new width and head_dim.

    ``decouple`` asks for ``head_dim * heads != width`` wherever the config has an explicit head_dim
    (the decoder, see :func:`_choose_head_dim`).
    """
    width_key = _width_key(node)
    hidden = node.get(width_key)
    heads_key = _first_key(node, _HEAD_KEYS)
    kv_key = _first_key(node, _KV_HEAD_KEYS)
    if not isinstance(hidden, int) or heads_key is None:
        return _Geometry(hidden=hidden_budget, head_dim=limits.max_head_dim)
    heads = node[heads_key]
    new_heads, new_kv = _choose_heads(heads, node[kv_key] if kv_key else heads, base_heads, limits)
    # The coupled head_dim is even (RoPE rotates pairs) and makes heads * head_dim fit the budget, unless
    # the head count needs more (then it is min_head_dim).
    coupled = max(limits.min_head_dim, min(limits.max_head_dim, 2 * ((hidden_budget // new_heads) // 2)))
    real_head_dim = node.get("head_dim")
    real = (hidden, heads, real_head_dim)
    new_head_dim, new_hidden = _choose_head_dim(real, new_heads, coupled, decouple, limits)

    node[width_key] = new_hidden
    node[heads_key] = new_heads
    if kv_key:
        node[kv_key] = new_kv
    if isinstance(real_head_dim, int):
        node["head_dim"] = new_head_dim
    _shrink_ffn(node, hidden, new_hidden)
    return _Geometry(hidden=new_hidden, head_dim=new_head_dim)


def _shrink_rope(node: dict[str, Any], config_cls: type, head_dim: int) -> None:
    """Rescale M-RoPE sections to the new rotary half-dimension (the forward crashes otherwise)."""
    rotary_half = int(head_dim * node.get("partial_rotary_factor", 1.0)) // 2
    uses_mrope = "mrope_section" in getattr(config_cls, "ignore_keys_at_rope_validation", ())

    def visit(params: dict[str, Any]) -> None:
        if params.get("mrope_section"):
            params["mrope_section"] = _split_proportionally(params["mrope_section"], rotary_half)
        elif uses_mrope and ("rope_type" in params or "rope_theta" in params):
            # The config class declares M-RoPE but the (default) config leaves the section to a hard-coded
            # modeling default sized for the real head_dim: write an explicit one (T 1/4, H 3/8, W 3/8).
            params["mrope_section"] = _split_proportionally([2, 3, 3], rotary_half)
        for value in params.values():
            if isinstance(value, dict):
                visit(value)

    for key in _ROPE_KEYS:
        if isinstance(node.get(key), dict):
            visit(node[key])


def _shrink_depth(node: dict[str, Any], max_layers: int, limits: ShrinkLimits) -> tuple[int, int] | None:
    """Cut the layer count and resample everything indexed by layer; returns (old, new) depth."""
    layers_key = _first_key(node, _LAYER_COUNT_KEYS)
    if layers_key is None:
        return None
    old = node[layers_key]
    new = min(old, max_layers)
    node[layers_key] = new
    for key, value in list(node.items()):
        if key.endswith(_INDEX_LIST_SUFFIXES) and isinstance(value, list | tuple):
            if all(isinstance(i, int) and 0 <= i < old for i in value):
                node[key] = _remap_indexes(value, old, new)
        elif isinstance(value, list | tuple) and len(value) == old and old > new:
            if all(v is None or isinstance(v, str | int | float | bool) for v in value):
                node[key] = resample_layer_list(value, new)
        elif key in _LAYER_THRESHOLD_KEYS and isinstance(value, int) and value > 0:
            node[key] = new if value >= old else min(new - 1, max(1, round(value * new / old)))
    if isinstance(node.get("sliding_window"), int):
        node["sliding_window"] = min(node["sliding_window"], limits.sliding_window)
    for key in _EXPERT_COUNT_KEYS:
        if isinstance(node.get(key), int) and node[key] > 1:
            node[key] = min(node[key], limits.experts)
    for key in _EXPERTS_PER_TOKEN_KEYS:
        if isinstance(node.get(key), int):
            node[key] = min(node[key], limits.experts_per_token)
    return old, new


def _merge_factor(*nodes: Mapping[str, Any]) -> int:
    factor = 1
    for node in nodes:
        for key in _MERGE_FACTOR_KEYS:
            value = node.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                factor *= value
        ratio = node.get("downsample_ratio")
        if isinstance(ratio, float) and 0 < ratio < 1:
            factor *= round(1 / ratio)
    return factor


def _shrink_image_geometry(node: dict[str, Any], merge_factor: int) -> None:
    """Make images tiny: a 2x2 grid of merged patches, windows covering 2x2 merged patches."""
    patch = node.get("patch_size")
    patch = patch[0] if isinstance(patch, list | tuple) and patch else patch
    if not isinstance(patch, int):
        return
    side = patch * 2 * merge_factor
    if isinstance(node.get("image_size"), int):
        node["image_size"] = side
    elif isinstance(node.get("image_size"), list | tuple):
        node["image_size"] = [side] * len(node["image_size"])
    if isinstance(node.get("window_size"), int):
        node["window_size"] = patch * node.get("spatial_merge_size", 1) * 2


# ----------------------------------------------------------------------------------------------------------
# Token ids
# ----------------------------------------------------------------------------------------------------------


def _is_token_field(key: str) -> bool:
    return key.lstrip("_").endswith(_TOKEN_SUFFIXES)


def _apply_token_ids(
    node: dict[str, Any],
    config_cls: type,
    token_ids: Mapping[str, int | list[int]],
    vocab_size: int | None,
    path: str,
    missing: list[str],
) -> None:
    aliases = getattr(config_cls, "attribute_map", {})
    canonical = {aliases.get(name, name): value for name, value in token_ids.items()}
    for key, value in list(node.items()):
        if not _is_token_field(key):
            continue
        name = key.lstrip("_")  # e.g. Idefics3 keeps a deprecated private `_pad_token_id`
        if name in canonical or name in token_ids:
            node[key] = canonical.get(name, token_ids.get(name))
            continue
        ids = value if isinstance(value, list) else [value]
        if vocab_size is not None and any(isinstance(i, int) and not 0 <= i < vocab_size for i in ids):
            missing.append(f"{path}{key}={value}")


# ----------------------------------------------------------------------------------------------------------
# Tree walk
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    path: tuple[str, ...]
    config: PretrainedConfig
    data: dict[str, Any]
    parent: _Node | None


def _walk(
    config: PretrainedConfig, data: dict[str, Any], path: tuple[str, ...], parent: _Node | None
) -> list[_Node]:
    node = _Node(path, config, data, parent)
    nodes = [node]
    for key, value in data.items():
        child = getattr(config, key, None) if isinstance(value, dict) else None
        if isinstance(child, PretrainedConfig):
            nodes.extend(_walk(child, value, (*path, key), node))
    return nodes


def _shrink_decoder(node: _Node, vocab_size: int | None, limits: ShrinkLimits) -> _Geometry:
    geometry = _shrink_attention(
        node.data, limits.text_hidden, limits.text_base_heads, limits, decouple=limits.head_dim_offset != 0
    )
    _shrink_rope(node.data, type(node.config), geometry.head_dim)
    _shrink_depth(node.data, limits.text_layers, limits)
    if vocab_size is not None and "vocab_size" in node.data:
        node.data["vocab_size"] = vocab_size
    return geometry


def _shrink_encoder(node: _Node, text_width: int, limits: ShrinkLimits) -> tuple[int, int] | None:
    """Shrink one encoder sub-config; returns its (old, new) depth."""
    geometry = _shrink_attention(node.data, limits.encoder_hidden, limits.encoder_base_heads, limits)
    _shrink_rope(node.data, type(node.config), geometry.head_dim)
    depth = _shrink_depth(node.data, limits.encoder_layers, limits)
    decoder_width_keys = _DECODER_WIDTH_KEYS
    if _width_key(node.data) != "hidden_size":
        decoder_width_keys = (*decoder_width_keys, "hidden_size")
    for key in decoder_width_keys:
        if isinstance(node.data.get(key), int):
            node.data[key] = text_width
    if isinstance(node.data.get("projection_dim"), int):
        node.data["projection_dim"] = geometry.hidden
    for key in LATENT_COUNT_KEYS:
        if isinstance(node.data.get(key), int):
            node.data[key] = min(node.data[key], limits.resampler_latents)
    ancestors = []
    parent = node.parent
    while parent is not None:
        ancestors.append(parent.data)
        parent = parent.parent
    _shrink_image_geometry(node.data, _merge_factor(node.data, *ancestors))
    return depth


def _shrink_root(
    tree: dict[str, Any], depths: Mapping[tuple[str, ...], tuple[int, int]], vocab_size: int | None
) -> None:
    """Composite-level fields: vocabulary, the vision layer taps and the image sequence length."""
    if vocab_size is not None and isinstance(tree.get("vocab_size"), int):
        tree["vocab_size"] = vocab_size
    vision = tree.get("vision_config")
    if not isinstance(vision, dict) or ("vision_config",) not in depths:
        return
    old, new = depths[("vision_config",)]
    layer = tree.get("vision_feature_layer")
    if isinstance(layer, int):
        tree["vision_feature_layer"] = _remap_hidden_state_index(layer, old, new)
    elif isinstance(layer, list):
        remapped = [_remap_hidden_state_index(i, old, new) for i in layer]
        tree["vision_feature_layer"] = list(dict.fromkeys(remapped))
    patch, size = vision.get("patch_size"), vision.get("image_size")
    if all(isinstance(v, int) for v in (tree.get("image_seq_length"), patch, size)):
        tree["image_seq_length"] = (size // patch) ** 2 // _merge_factor(tree) ** 2


def _apply_all_token_ids(
    nodes: Sequence[_Node], token_ids: Mapping[str, int | list[int]], vocab_size: int | None
) -> None:
    missing: list[str] = []
    for node in nodes:
        prefix = "".join(f"{p}." for p in node.path)
        _apply_token_ids(node.data, type(node.config), token_ids, vocab_size, prefix, missing)
    if missing:
        raise ValueError(
            f"token-id fields point outside the tiny vocabulary of {vocab_size}: {', '.join(missing)}; "
            "pass their new values in `token_ids`"
        )


def shrink_config(
    config: PretrainedConfig,
    *,
    vocab_size: int | None = None,
    token_ids: Mapping[str, int | list[int]] | None = None,
    limits: ShrinkLimits = DEFAULT_LIMITS,
) -> PretrainedConfig:
    """Return a tiny copy of ``config`` with the same structure (the input is not modified).

    Args:
        config: a real (or default) config, composite or not.
        vocab_size: size of the tiny tokenizer's vocabulary; ``None`` keeps the real vocabulary (and so every
            real token id stays valid, e.g. for meta-device instantiation).
        token_ids: new values for token-id fields, keyed by config field name (``image_token_id``,
            ``bos_token_id``...; aliases such as llava's ``image_token_index`` resolve through
            ``attribute_map``). Applied in every sub-config that has the field.
        limits: target sizes.

    Raises:
        ValueError: a token-id field would point outside the new vocabulary and ``token_ids`` does not say
            what it should become.
    """
    tree = config.to_dict()
    nodes = _walk(config, tree, (), None)
    text_config = config.get_text_config(decoder=True)
    text_node = next((n for n in nodes if n.config is text_config), nodes[0])
    text_geometry = _shrink_decoder(text_node, vocab_size, limits)
    # Every sub-config other than the decoder is an encoder (vision tower, audio tower, their backbones).
    depths: dict[tuple[str, ...], tuple[int, int]] = {}
    for node in nodes[1:]:
        if node is not text_node and (depth := _shrink_encoder(node, text_geometry.hidden, limits)):
            depths[node.path] = depth
    if text_node is not nodes[0]:
        _shrink_root(tree, depths, vocab_size)
    _apply_all_token_ids(nodes, dict(token_ids or {}), vocab_size)
    return type(config).from_dict(tree)
