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
as wide as its block. After scaling, sizes are moved apart where they still coincide: every FFN field off
every width and every other FFN (:func:`_separate_ffn_sizes`), an encoder width off the decoder's attention
widths (:func:`_shrink_encoder_apart`), and, when the builder knows the processor's image-token counts,
every width off those (``ShrinkLimits.avoid_sizes``). Config-determined image-token counts are not powers of
two (3x3 pooled grids, 10 latents). (Sizes that still coincide are caught by :mod:`vlmforge.tiny.dimensions`.)

Sizes that only make sense together are kept consistent: M-RoPE sections (explicit, declared, or hard-coded
in the modeling file) fill the rotary half of ``head_dim * partial_rotary_factor`` with >= 1 pair each, a
pooled ``mm_tokens_per_image`` divides the patch grid, patch-count tables and learned position tables follow
the tiny grid, layer taps in sub-configs index the tiny tower, fields equal to a real width become the tiny
width, the widths image features are written in (a composite config's own width, a projector output at the
real decoder width) become the decoder width, a concatenation of ``k`` tapped layers stays ``k + 1`` widths,
convolutional VQ encoders make a 2x2 code grid, and timm towers get explicit tiny ``model_args``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import torch
from transformers import PretrainedConfig

__all__ = [
    "LATENT_COUNT_KEYS",
    "MissingBackboneError",
    "ShrinkLimits",
    "require_backbone_packages",
    "resample_layer_list",
    "shrink_config",
]


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
    # from full attention, so windows (and attention chunks) are cut to a size that actually masks something.
    sliding_window: int = 16
    # Image tokens per image of a learned-query resampler: not a power of two, unlike every width here.
    resampler_latents: int = 10
    # Codes of a VQ image tokenizer (Chameleon, Emu3): each code is a token of the tiny vocabulary, so the
    # codebook must be a handful of entries, not 8192.
    codebook_size: int = 40
    experts: int = 4
    experts_per_token: int = 2
    # Sizes no width, attention width or FFN of the tiny model may take: the image-token counts a processor
    # produces for the probe images (known only once the processor exists, so a builder that finds a
    # coincidence with them shrinks again with them here). The shrinker then tries other budgets.
    avoid_sizes: tuple[int, ...] = ()


DEFAULT_LIMITS = ShrinkLimits()

_LAYER_COUNT_KEYS = ("num_hidden_layers", "depth", "num_layers", "n_layers")
# Further stacks of layers next to the main one (Mllama's vision tower: 32 local + 8 global layers).
_EXTRA_LAYER_COUNT = re.compile(r"^num_\w+_layers$")
_HEAD_KEYS = ("num_attention_heads", "num_heads", "n_heads", "attention_heads")
_KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads")
_FFN_KEYS = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_dim")
_EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok",)
# Integer "the first/last k layers are special" fields, rescaled proportionally to the new depth.
_LAYER_THRESHOLD_KEYS = ("max_window_layers", "first_k_dense_replace")
# Codebook sizes of VQ image tokenizers.
_CODEBOOK_KEYS = ("num_embeddings", "codebook_size")
# token string -> id tables (Chameleon/Emu3 map VQ codes to BPE tokens through the whole tokenizer vocab).
_VOCABULARY_MAP_KEYS = ("vocabulary_map",)
# Integer "the last k layers are special" fields: Gemma3n's last num_kv_shared_layers reuse the KV cache of
# the last earlier layer of their type, so every layer type must still occur before them.
_LAYER_TAIL_KEYS = ("num_kv_shared_layers",)
# Encoder fields that must equal the decoder width because the encoder projects straight into it.
_DECODER_WIDTH_KEYS = ("out_hidden_size", "text_hidden_size")
# Pixel-shuffle / patch-merge factors: image grids must be divisible by them.
_MERGE_FACTOR_KEYS = (
    "scale_factor",
    "spatial_merge_size",
    "merge_size",
    "projector_pooling_ratio",
    "downsample_factor",
)
_ROPE_KEYS = ("rope_parameters", "rope_scaling")
# Absolute init standard deviations of weight matrices (HF's ``normal_(std=initializer_range)``). Multipliers
# of a width-aware std (CLIP's ``initializer_factor``) already follow the width and are left alone.
_INIT_STD_KEYS = ("initializer_range", "init_std")
# How far a token attends back (a sliding window, an attention chunk): cut to limits.sliding_window.
_ATTENTION_SPAN_KEYS = ("sliding_window", "attention_chunk_size")
# Learned-query resamplers (Idefics2's perceiver, Kosmos-2's image-to-text projection): the latent count is
# the number of image tokens per image.
LATENT_COUNT_KEYS = ("resampler_n_latents", "latent_query_num")
_TOKEN_SUFFIXES = ("_token_id", "_token_index", "_token_ids")
# Per-image token counts of a pooled square patch grid; the tiny grid is pooled to _POOLED_TOKENS_SIDE^2.
_POOLED_TOKEN_KEYS = ("mm_tokens_per_image",)
_POOLED_TOKENS_SIDE = 3
# Fields named like a size: candidates for "equals a real width, so it is that width" (_map_equal_dims).
_SIZE_FIELD = re.compile(r"(_size|_dim|_channels|_width)$")
# ...except sizes that are no widths (or that a rule above already owns).
_EXCLUDED_SIZE_FIELD = re.compile(
    r"vocab|patch|image|window|position|kernel|pool|merge|token|chunk|codebook|batch|^num_|^max_"
)
_MANAGED_KEYS = frozenset(
    {"hidden_size", "embed_dim", "head_dim", "projection_dim", *_FFN_KEYS, *_DECODER_WIDTH_KEYS}
)
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


def _first_key(node: Mapping[str, Any], keys: Sequence[str], *, prefixed: bool = False) -> str | None:
    """The first of ``keys`` the node has as an int.

    With ``prefixed``, a node that has none of them may name its one stack with a prefix (Gemma3n's audio
    conformer: ``conf_num_hidden_layers``, ``conf_num_attention_heads``); the prefixed key counts when exactly
    one key carries a given ``num_*`` name under a prefix (two would be two stacks, not one renamed). Shorter
    names (``n_heads``, ``depth``) are too generic to be read under a prefix: ``resampler_depth`` is the depth
    of a perceiver's own attention, which its resampler rules size.
    """
    found = next((k for k in keys if _is_int_value(node.get(k))), None)
    if found is not None or not prefixed:
        return found
    for key in (k for k in keys if k.startswith("num_")):
        matches = [k for k, v in node.items() if k.endswith(f"_{key}") and _is_int_value(v)]
        if len(matches) == 1:
            return matches[0]
    return None


def _aliased(keys: Sequence[str], config_cls: type) -> tuple[str, ...]:
    """``keys`` followed by the fields a config class stores them under (its ``attribute_map``: Kosmos-2's
    text config keeps ``num_hidden_layers`` in ``layers``), which a ``to_dict()`` tree holds instead."""
    aliases = getattr(config_cls, "attribute_map", {})
    return (*keys, *(aliases[k] for k in keys if k in aliases))


def _is_int_value(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


def _scaled_ffn(width: int, old_hidden: int, new_hidden: int) -> int:
    scaled = _round_to(new_hidden * width / old_hidden, 8, 8)
    scaled = min(4 * new_hidden, max(new_hidden // 2, scaled))
    # A square FFN (e.g. a default config whose ratio rounds to 1) would hide up/down mix-ups.
    return scaled + 8 if scaled == new_hidden else scaled


def _shrink_ffn(node: dict[str, Any], old_hidden: int, new_hidden: int) -> None:
    """Scale every FFN width with the model width (keeping its ratio, within [hidden / 2, 4 * hidden]).

    A per-layer list of widths (Gemma3n's ``intermediate_size``, one entry per layer) scales entry by entry.
    """
    for key in _FFN_KEYS:
        value = node.get(key)
        if _is_int(value):
            node[key] = _scaled_ffn(value, old_hidden, new_hidden)
        elif isinstance(value, list) and value and all(_is_int(v) for v in value):
            node[key] = [_scaled_ffn(v, old_hidden, new_hidden) for v in value]


def _shrink_attention(
    node: dict[str, Any], hidden_budget: int, base_heads: int, limits: ShrinkLimits, *, decouple: bool = False
) -> _Geometry:
    """Rewrite width, heads, KV heads, head_dim and FFN widths; returns the new width and head_dim.

    ``decouple`` asks for ``head_dim * heads != width`` wherever the config has an explicit head_dim
    (the decoder, see :func:`_choose_head_dim`).
    """
    width_key = _width_key(node)
    hidden = node.get(width_key)
    heads_key = _first_key(node, _HEAD_KEYS, prefixed=True)
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


def _partial_rotary_factor(node: Mapping[str, Any]) -> float:
    """The rotated fraction of head_dim, wherever the config keeps it (top level or inside the RoPE params).

    Qwen3.5 stores ``partial_rotary_factor`` inside ``rope_parameters``; reading only the top level would size
    M-RoPE sections for the whole head_dim while the modeling code rotates a quarter of it.
    """
    factor = node.get("partial_rotary_factor")
    for key in _ROPE_KEYS:
        params = node.get(key)
        if isinstance(params, Mapping):
            inner = params.get("partial_rotary_factor")
            # Per-layer-type RoPE params (Gemma3's {"sliding_attention": {...}}) nest one level deeper.
            nested = [v.get("partial_rotary_factor") for v in params.values() if isinstance(v, Mapping)]
            factor = next((f for f in (inner, *nested) if isinstance(f, float | int)), factor)
    return float(factor) if isinstance(factor, float | int) and not isinstance(factor, bool) else 1.0


def _rotary_dim(head_dim: int, factor: float) -> int:
    # Modeling code computes int(head_dim * partial_rotary_factor) and rotates pairs of that.
    return int(head_dim * factor)


_HARDCODED_SECTION = re.compile(r"""["']mrope_section["']\s*,\s*\[([\d\s,]+)\]""")


@cache
def _hardcoded_mrope_section(config_cls: type) -> tuple[int, ...] | None:
    """The M-RoPE section the modeling file falls back to when the config has none (``.get(..., [a, b, c])``).

    Its proportions are the real architecture's (Qwen3.5: [11, 11, 10] of a 64-dim rotary part), so a tiny
    section derived from them keeps the real T/H/W split instead of a guessed one.
    """
    module_name = config_cls.__module__.replace(".configuration_", ".modeling_")
    try:
        source = inspect.getsource(importlib.import_module(module_name))
    except (ImportError, OSError, TypeError):
        return None
    match = _HARDCODED_SECTION.search(source)
    return tuple(int(v) for v in match.group(1).split(",") if v.strip()) if match else None


def _declares_mrope(config_cls: type) -> bool:
    return "mrope_section" in getattr(config_cls, "ignore_keys_at_rope_validation", ())


def _mrope_parts(node: Mapping[str, Any], config_cls: type) -> int:
    """How many sections the decoder's M-RoPE splits the rotary half into (0 without M-RoPE).

    M-RoPE is there when the config has a section, when the config class declares one, or when the modeling
    file falls back to a hard-coded one (PaddleOCR-VL: ``.get("mrope_section", [16, 24, 24])`` with no
    declaration): that section needs ``2 * sum(section)`` rotary dims, which a tiny head_dim does not have.
    """
    explicit = _find_mrope_section(node)
    if explicit:
        return len(explicit)
    hardcoded = _hardcoded_mrope_section(config_cls)
    if hardcoded or _declares_mrope(config_cls):
        return len(hardcoded or _DEFAULT_MROPE_PROPORTIONS)
    return 0


def _find_mrope_section(params: Mapping[str, Any]) -> list[int] | None:
    for key, value in params.items():
        if key == "mrope_section" and isinstance(value, list | tuple) and value:
            return list(value)
        if isinstance(value, Mapping) and (found := _find_mrope_section(value)):
            return found
    return None


# T 1/4, H 3/8, W 3/8: the Qwen2-VL split, used when neither config nor modeling file says otherwise.
_DEFAULT_MROPE_PROPORTIONS = (2, 3, 3)


def _head_dim_with_rotary_room(head_dim: int, parts: int, factor: float) -> int:
    """The smallest head_dim >= ``head_dim`` (steps of 4) whose rotary half holds ``parts`` sections.

    M-RoPE gives every section (T, H, W) at least one frequency pair; a tiny head_dim whose rotated part is
    smaller than that (Qwen3.5: head_dim 16 * factor 0.25 = 4 dims = 2 pairs for 3 sections) crashes or,
    worse, silently drops an axis.
    """
    while _rotary_dim(head_dim, factor) // 2 < parts or _rotary_dim(head_dim, factor) % 2:
        head_dim += 4
    return head_dim


def _shrink_rope(node: dict[str, Any], config_cls: type, head_dim: int, *, decoder: bool = False) -> None:
    """Rescale M-RoPE sections to the new rotary half-dimension (the forward crashes otherwise).

    For the ``decoder``, a section the modeling file hard-codes is written out explicitly, rescaled: the
    modeling code reads ``rope_parameters["mrope_section"]`` before its fallback, and real checkpoints of
    those families carry the key too. (Encoders sharing the modeling file do not use the decoder's M-RoPE.)
    """
    rotary_half = _rotary_dim(head_dim, _partial_rotary_factor(node)) // 2
    fallback = _hardcoded_mrope_section(config_cls) if decoder else None
    uses_mrope = _declares_mrope(config_cls) or fallback is not None

    def visit(params: dict[str, Any]) -> None:
        if params.get("mrope_section"):
            params["mrope_section"] = _split_proportionally(params["mrope_section"], rotary_half)
        elif uses_mrope and ("rope_type" in params or "rope_theta" in params):
            # The config class declares M-RoPE but the (default) config leaves the section to a hard-coded
            # modeling default sized for the real head_dim: write an explicit one with the same proportions.
            params["mrope_section"] = _split_proportionally(
                fallback or _DEFAULT_MROPE_PROPORTIONS, rotary_half
            )
        for value in params.values():
            if isinstance(value, dict):
                visit(value)

    for key in _ROPE_KEYS:
        if isinstance(node.get(key), dict):
            visit(node[key])


def _shrink_depth(
    node: dict[str, Any], max_layers: int, limits: ShrinkLimits, config_cls: type
) -> tuple[int, int] | None:
    """Cut the layer count and resample everything indexed by layer; returns (old, new) depth."""
    layers_key = _first_key(node, _aliased(_LAYER_COUNT_KEYS, config_cls), prefixed=True)
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
    _shrink_layer_tail(node, old, new)
    for key, value in list(node.items()):
        # A second stack (global layers after local ones) is as real-sized as the first; "last k layers"
        # counts are rescaled above, not capped.
        if (
            key != layers_key
            and key not in _LAYER_TAIL_KEYS
            and _EXTRA_LAYER_COUNT.match(key)
            and _is_int(value)
        ):
            node[key] = min(value, max_layers)
    # Chunked attention (Llama 4's attention_chunk_size 8192) is a window too: left real-sized it would never
    # split a tiny prompt, and chunked layers would be indistinguishable from full attention.
    for key in _ATTENTION_SPAN_KEYS:
        if isinstance(node.get(key), int):
            node[key] = min(node[key], limits.sliding_window)
    for key in _EXPERT_COUNT_KEYS:
        if isinstance(node.get(key), int) and node[key] > 1:
            node[key] = min(node[key], limits.experts)
    for key in _EXPERTS_PER_TOKEN_KEYS:
        if isinstance(node.get(key), int):
            node[key] = min(node[key], limits.experts_per_token)
    return old, new


def _shrink_layer_tail(node: dict[str, Any], old: int, new: int) -> None:
    """Rescale "last k layers" counts and keep every layer type among the layers before them.

    The shared tail reads caches written by earlier layers of the same type; a resampled ``layer_types``
    whose head lacks a type (the lone full-attention layer landed in the tail) cannot be built, so the
    pattern is then compressed to the head's length and repeated, which keeps every type in the head.
    """
    for key in _LAYER_TAIL_KEYS:
        tail = node.get(key)
        if not _is_int(tail) or old <= new:
            continue
        tail = min(new - 1, max(1, round(tail * new / old)))
        node[key] = tail
        types = node.get("layer_types")
        head = new - tail
        if isinstance(types, list) and len(types) == new and set(types[:head]) != set(types):
            pattern = _compress(types, head) if len(set(types)) <= head else types[:head]
            node["layer_types"] = [pattern[i % head] for i in range(new)]


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
    factor = _partial_rotary_factor(node.data)
    parts = _mrope_parts(node.data, type(node.config))
    if parts and factor > 0 and isinstance(node.data.get("head_dim"), int):
        head_dim = _head_dim_with_rotary_room(geometry.head_dim, parts, factor)
        if head_dim != geometry.head_dim:
            node.data["head_dim"] = head_dim
            geometry = _Geometry(hidden=geometry.hidden, head_dim=head_dim)
    elif parts and factor > 0 and (heads_key := _first_key(node.data, _HEAD_KEYS)):
        # head_dim = width // heads: the width grows with it (GLM-4V-MoE: rotary half 2 for 3 sections).
        head_dim = _head_dim_with_rotary_room(geometry.head_dim, parts, factor)
        if head_dim != geometry.head_dim:
            width = node.data[heads_key] * head_dim
            node.data[_width_key(node.data)] = width
            geometry = _Geometry(hidden=width, head_dim=head_dim)
    _shrink_rope(node.data, type(node.config), geometry.head_dim, decoder=True)
    _shrink_depth(node.data, limits.text_layers, limits, type(node.config))
    if vocab_size is not None and "vocab_size" in node.data:
        node.data["vocab_size"] = vocab_size
        # Secondary tables over (a prefix of) the vocabulary (Gemma3n's vocab_size_per_layer_input, 262144
        # x 256 per layer) are cut to the tiny vocabulary too, or they dominate the tiny model.
        for key, value in list(node.data.items()):
            if key.startswith("vocab_size_") and _is_int(value):
                node.data[key] = min(value, vocab_size)
    return geometry


def _shrink_encoder(node: _Node, text_width: int, limits: ShrinkLimits) -> tuple[int, int] | None:
    """Shrink one encoder sub-config; returns its (old, new) depth."""
    geometry = _shrink_attention(node.data, limits.encoder_hidden, limits.encoder_base_heads, limits)
    _shrink_rope(node.data, type(node.config), geometry.head_dim)
    depth = _shrink_depth(node.data, limits.encoder_layers, limits, type(node.config))
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
    for key in _CODEBOOK_KEYS:
        if _is_int(node.data.get(key)):
            node.data[key] = min(node.data[key], limits.codebook_size)
    ancestors = []
    parent = node.parent
    while parent is not None:
        ancestors.append(parent.data)
        parent = parent.parent
    _shrink_image_geometry(node.data, _merge_factor(node.data, *ancestors))
    _shrink_conv_vq(node.data, limits)
    timm_args = node.data.get("model_args")
    if _built_by_timm(type(node.config)) and (isinstance(timm_args, dict) or node.data.get("architecture")):
        # A tower named only by its architecture (Gemma3n's MobileNetV5: model_args None) gets explicit args.
        merge = _merge_factor(node.data, *ancestors)
        args = node.data["model_args"] = dict(timm_args or {})
        if _is_int(args.get("embed_dim")):
            depth = _shrink_timm_args(node.data, args, 2 * merge, limits) or depth
        else:
            _shrink_timm_stages(node.data, args, 2 * merge, limits)
    return depth


def _shrink_conv_vq(node: dict[str, Any], limits: ShrinkLimits) -> None:
    """A convolutional VQ encoder (Chameleon's, Emu3's VQGAN): few channels, one block per level, 2x2 codes.

    It is described by ``base_channels`` times a ``channel_multiplier`` per level (each level but the last
    halves the image), not by a width and heads. The real one reads 512 px images into 32x32 = 1024 codes,
    i.e. 1024 image tokens in every prompt. Channels stay multiples of 32 (its GroupNorms use 32 groups).
    """
    multipliers, base = node.get("channel_multiplier"), node.get("base_channels")
    if not (isinstance(multipliers, list) and multipliers and _is_int(base)):
        return
    node["base_channels"] = min(base, limits.encoder_hidden)
    # The attention in its middle block works at the last level's channels (Emu3: 1024 = 256 * 4).
    # (`embed_dim` is the code vector size there, not a width.)
    if _is_int(multipliers[-1]) and _is_int(node.get("hidden_size")):
        node["hidden_size"] = node["base_channels"] * multipliers[-1]
    if _is_int(node.get("num_res_blocks")):
        node["num_res_blocks"] = 1
    for key in ("latent_channels", "embed_dim"):
        if _is_int(node.get(key)):
            node[key] = min(node[key], limits.encoder_hidden)
    if _is_int(node.get("resolution")):
        node["resolution"] = 2 * 2 ** (len(multipliers) - 1)


_PATCH_IN_NAME = re.compile(r"patch(\d+)")


def _shrink_timm_args(
    node: dict[str, Any], args: dict[str, Any], grid: int, limits: ShrinkLimits
) -> tuple[int, int] | None:
    """Shrink a timm ViT configured by architecture name + ``model_args`` (PerceptionLM's PE tower).

    ``timm.create_model(architecture, **model_args)`` takes the architecture's defaults for every size
    ``model_args`` leaves out (PE-L: 16 heads), so the tiny sizes are all written explicitly: width, heads,
    depth, image size (``grid`` patches per side, i.e. 2 tokens after the projector's merge; patch size from
    ``model_args`` or the ``patch14`` in the name) and a RoPE reference grid (``ref_feat_shape``) equal to
    the tiny grid. Towers without ``embed_dim`` (convolutional ones such as MobileNetV5 or FastViT) are
    left as they are. Returns the (old, new) depth.
    """
    if not _is_int(args.get("embed_dim")):
        return None
    old_width = args["embed_dim"]
    args["embed_dim"] = limits.encoder_hidden
    args["num_heads"] = limits.encoder_base_heads
    old_depth = args.get("depth") if _is_int(args.get("depth")) else None
    args["depth"] = min(old_depth or limits.encoder_layers, limits.encoder_layers)
    for key in ("hidden_size", "num_features"):
        if node.get(key) == old_width:
            node[key] = limits.encoder_hidden
    patch = args.get("patch_size")
    if not _is_int(patch):
        match = _PATCH_IN_NAME.search(str(node.get("architecture", "")))
        patch = int(match.group(1)) if match else None
    if _is_int(patch):
        # Always explicit: an absent img_size means the architecture's default (336 for PE-L).
        if isinstance(args.get("img_size"), list | tuple):
            args["img_size"] = [patch * grid] * len(args["img_size"])
        else:
            args["img_size"] = patch * grid
        if isinstance(args.get("ref_feat_shape"), list | tuple):
            args["ref_feat_shape"] = [grid] * len(args["ref_feat_shape"])
    return (old_depth, args["depth"]) if old_depth else None


# Keyword arguments of a staged timm model: per-stage widths and per-stage block counts.
_STAGE_WIDTH_ARG = re.compile(r"(^|_)(dims?|chs|channels|widths?)$")
_STAGE_DEPTH_ARG = re.compile(r"(^|_)(layers|depths?|blocks)$")
# A float factor on every channel count, taken by a timm entry point's builder (MobileNet/EfficientNet
# families: `_gen_mobilenet_v5(variant, channel_multiplier=1.0, ...)`), for towers whose widths are written
# as block strings (`block_args`) that cannot travel through a config's JSON `model_args`.
_WIDTH_MULTIPLIER_ARG = re.compile(r"(^|_)(channel|width)_multiplier$")
# An integer side of the grid a tower resamples its features to (MobileNetV5's `msfa_output_resolution` 16:
# 16x16 image tokens whatever the input size), a keyword of the model class.
_OUTPUT_GRID_ARG = re.compile(r"(^|_)output_(resolution|size)$")
# Channels are rounded to multiples of 8 by timm's `round_channels`: the narrowest a multiplier can get.
_TIMM_CHANNEL_DIVISOR = 8


def timm_model_kwargs(architecture: str, model_args: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
    """The model class a timm architecture builds, and every keyword argument its entry point passes it.

    An architecture name stands for sizes written inside timm's entry point (``fastvit_mci3``: five stages of
    96..1536 channels), not in the config; building it on the meta device with the class's ``__init__``
    recorded shows them, whatever the architecture.
    """
    import timm  # local import: only timm-built towers get here, and timm is an optional extra

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, **model_args)
    model_cls, recorded = type(model), {}
    original = model_cls.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        if not recorded:
            recorded.update(kwargs)
        original(self, *args, **kwargs)

    model_cls.__init__ = recording
    try:
        with torch.device("meta"):
            timm.create_model(architecture, pretrained=False, **model_args)
    finally:
        model_cls.__init__ = original
    return model_cls, recorded


def timm_width_multipliers(architecture: str) -> list[str]:
    """Channel-multiplier keywords a timm architecture's entry point accepts, directly or through its builder.

    Entry points are thin (``mobilenetv5_300m_enc(pretrained=False, **kwargs)``) and forward ``**kwargs`` to a
    module-level builder that takes the scaling factors (``_gen_mobilenet_v5(variant, channel_multiplier=1.0,
    ...)``); the builders it calls are found in its source and looked up in its module. Only float parameters
    (defaulting to a float) whose names say they multiply widths count.
    """
    from timm.models import _registry  # local import: timm is an optional extra

    entry = _registry.model_entrypoint(architecture)
    try:
        called = set(re.findall(r"\b(\w+)\(", inspect.getsource(entry)))
    except (OSError, TypeError):
        called = set()
    builders = (entry.__globals__.get(name) for name in sorted(called))
    functions = [entry, *(f for f in builders if inspect.isfunction(f))]
    found: list[str] = []
    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            if _WIDTH_MULTIPLIER_ARG.search(name) and isinstance(parameter.default, float):
                found.append(name)
    return list(dict.fromkeys(found))


def _timm_output_grid_args(model_cls: type) -> list[str]:
    """Integer keywords of a timm model class that set the side of the feature grid it outputs."""
    return [
        name
        for name, parameter in inspect.signature(model_cls.__init__).parameters.items()
        if _OUTPUT_GRID_ARG.search(name) and _is_int(parameter.default)
    ]


def _scale_timm_widths(architecture: str, args: dict[str, Any], limits: ShrinkLimits) -> bool:
    """Narrow a timm tower through its entry point's channel multiplier; whether it had one.

    The multiplier is set so that the widest stage (``feature_info``'s last ``num_chs``, measured on the meta
    device at the current multiplier) becomes ``encoder_hidden`` channels; narrower stages scale with it and
    bottom out at timm's channel divisor.
    """
    import timm

    names = [n for n in timm_width_multipliers(architecture) if n not in args]
    if not names:
        return False
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, **args)
    info = getattr(model, "feature_info", None)
    widest = max((int(f["num_chs"]) for f in info), default=0) if info else 0
    if widest <= limits.encoder_hidden:
        return True
    factor = max(limits.encoder_hidden, _TIMM_CHANNEL_DIVISOR) / widest
    for name in names:
        args[name] = factor
    return True


def _shrink_timm_stages(node: dict[str, Any], args: dict[str, Any], grid: int, limits: ShrinkLimits) -> None:
    """Shrink a staged (convolutional / hybrid) timm tower named only by its architecture (FastVLM's FastViT).

    Its per-stage widths and block counts live in timm's entry point (see :func:`timm_model_kwargs`): every
    stage gets one block and ``encoder_hidden`` channels (twice that for the later half of the stages, so
    the stages still differ), written into ``model_args``. What the processor must know follows from the
    tiny model, which states none of it: the feature width (``hidden_size``, the projector's input) is the
    model's ``num_features``, the patch (``patch_size``) is its total stride from ``feature_info``, and the
    image (``image_size``) is ``grid`` patches per side.
    """
    import timm

    model_cls, kwargs = timm_model_kwargs(node["architecture"], args)
    staged = False
    for key, value in kwargs.items():
        if not (isinstance(value, list | tuple) and value and all(_is_int(v) for v in value)):
            continue
        if _STAGE_WIDTH_ARG.search(key):
            half = len(value) // 2
            args[key] = [limits.encoder_hidden * (1 if i < half else 2) for i in range(len(value))]
            staged = True
        elif _STAGE_DEPTH_ARG.search(key):
            args[key] = [1] * len(value)
    if not staged:
        # Widths written in block strings (MobileNetV5's `block_args`): scale them through the entry point.
        _scale_timm_widths(node["architecture"], args, limits)
    # A tower resampling its features to a fixed grid (MobileNetV5's 16x16 fusion output) outputs the tiny
    # grid, so that the image-token count follows the tiny image like a patch grid does.
    for key in _timm_output_grid_args(model_cls):
        args[key] = grid
    with torch.device("meta"):
        model = timm.create_model(node["architecture"], pretrained=False, **args)
    stride = model.feature_info[-1]["reduction"] if getattr(model, "feature_info", None) else None
    node["hidden_size"] = int(model.num_features)
    if _is_int(stride):
        node["patch_size"] = stride
        node["image_size"] = stride * grid


def _sub_config_keys(node: _Node) -> set[str]:
    return {
        k
        for k, v in node.data.items()
        if isinstance(v, dict) and isinstance(getattr(node.config, k, None), PretrainedConfig)
    }


def _attention_widths(data: Mapping[str, Any]) -> set[int]:
    """Query and KV widths (heads * head_dim) of one attention config."""
    hidden = data.get(_width_key(data))
    heads = next((data[k] for k in _HEAD_KEYS if _is_int(data.get(k))), None)
    if not _is_int(hidden) or not heads:
        return set()
    kv_heads = next((data[k] for k in _KV_HEAD_KEYS if _is_int(data.get(k))), heads)
    head_dim = data["head_dim"] if _is_int(data.get("head_dim")) else hidden // heads
    return {heads * head_dim, kv_heads * head_dim}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shrink_encoder_apart(
    node: _Node, text_width: int, taken: set[int], limits: ShrinkLimits
) -> tuple[int, int] | None:
    """:func:`_shrink_encoder`, retried with other width budgets while its width is in ``taken``.

    ``taken`` holds the decoder's attention widths and ``ShrinkLimits.avoid_sizes`` (the probe images'
    image-token counts: LLaVA-OneVision's 32-wide tower met the 32 tokens of the 84x56 probe).

    An encoder as wide as the decoder's KV projection (Qwen3.5: both 32) lets code that confuses them pass.
    The width is the freest encoder size (its head_dim follows), so it is the one that moves: first below the
    default budget, then above. Sub-config dicts are left in place, their own nodes shrink them.
    """
    children = _sub_config_keys(node)
    snapshot = {k: copy.deepcopy(v) for k, v in node.data.items() if k not in children}
    budgets = (limits.encoder_hidden, limits.encoder_hidden - 8, limits.encoder_hidden + 16)
    depth = None
    for budget in budgets:
        node.data.update(copy.deepcopy(snapshot))
        depth = _shrink_encoder(node, text_width, replace(limits, encoder_hidden=budget))
        width = node.data.get(_width_key(node.data))
        if not (_is_int(width) and width in taken and width != text_width):
            break
    return depth


def _pooled_grid(nodes: Sequence[_Node]) -> None:
    """Per-image token counts of a pooled square patch grid (Gemma3's ``mm_tokens_per_image``).

    The projector pools the ``image_size / patch`` grid down to ``sqrt(tokens)`` per side with a stride
    derived from both, so the two must stay consistent (a stride of 0 crashes). The tiny grid keeps a real
    pooling (stride 2 when the real one pools) down to 3x3 = 9 tokens: not a power of two, unlike widths.
    """
    for node in nodes:
        for key in _POOLED_TOKEN_KEYS:
            tokens = node.data.get(key)
            vision = node.data.get("vision_config")
            if not (_is_int(tokens) and isinstance(vision, dict)):
                continue
            patch, size = vision.get("patch_size"), vision.get("image_size")
            if not (_is_int(patch) and _is_int(size)):
                continue
            real_side = math.isqrt(tokens)
            pool = 1 if size // patch == real_side else 2
            vision["image_size"] = patch * _POOLED_TOKENS_SIDE * pool
            node.data[key] = _POOLED_TOKENS_SIDE**2


def _remap_layer_taps(nodes: Sequence[_Node], depths: Mapping[tuple[str, ...], tuple[int, int]]) -> None:
    """``vision_feature_layer`` in a *sub*-config (Molmo2's adapter) indexes the vision tower's layers.

    The root-level field is handled by :func:`_shrink_root`. In a sub-config the taps are layer indices
    (``-depth <= i < depth``, validated by the config class); distinct taps stay distinct when the tower has
    enough layers, because a model concatenating two taps must still see two different layers.
    """
    for node in nodes[1:]:
        layers = node.data.get("vision_feature_layer")
        if layers is None or node.parent is None:
            continue
        vision_path = (*node.parent.path, "vision_config")
        if vision_path not in depths:
            continue
        old, new = depths[vision_path]
        single = isinstance(layers, int)
        remapped: list[int] = []
        for index in [layers] if single else list(layers):
            if -new <= index < 0:
                remapped.append(index)
                continue
            position = index if index >= 0 else old + index
            target = min(new - 1, round(position * (new - 1) / max(1, old - 1)))
            free = [t for t in range(new) if t not in remapped]
            if target in remapped and free:
                target = min(free, key=lambda t: abs(t - target))
            remapped.append(target)
        node.data["vision_feature_layer"] = remapped[0] if single else remapped


def _patch_count_dicts(nodes: Sequence[_Node], grids: Mapping[int, int], limits: ShrinkLimits) -> None:
    """Dicts keyed by patch counts (Aria's ``projector_patch_to_query_dict`` {1225: 128, 4900: 256}).

    Keys are the patch counts of the real image sizes, values the learned queries (image tokens) each gets.
    The keys must become the tiny tower's patch counts, or the projector looks up a count that never occurs;
    values shrink like a resampler's latents (largest -> ``resampler_latents``, ratios kept).
    ``grids`` maps each real grid side to the tiny one; the largest key becomes the tiny full grid.
    """
    if not grids:
        return
    tiny_side = max(grids.values())
    for node in nodes:
        for key, value in list(node.data.items()):
            if not (isinstance(value, dict) and value and key.endswith(("_dict", "_map"))):
                continue
            try:
                items = {int(k): v for k, v in value.items()}
            except (TypeError, ValueError):
                continue
            if not all(_is_int(v) for v in items.values()):
                continue
            sides = {k: math.isqrt(k) for k in items}
            if any(side * side != k or k < 4 for k, side in sides.items()):
                continue  # not square patch counts
            top = max(items.values())
            # The largest count is the tower's full grid (a default config's tower may not match the dict).
            real_side = max(sides.values())
            shrunk: dict[int, int] = {}
            for count, queries in sorted(items.items()):
                side = max(1, round(sides[count] * tiny_side / real_side))
                shrunk[side * side] = max(1, round(queries * limits.resampler_latents / top))
            node.data[key] = shrunk


def _map_equal_dims(
    nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]], widths: Mapping[int, int]
) -> None:
    """Size fields the shrinker has no rule for but whose real value *is* a width being shrunk.

    A projector's ``projector_hidden_size`` or an adapter's ``vision_hidden_size`` equal to a real width is
    that width by construction; left real-sized they would make a 1024-wide layer in a 32-wide model (or a
    shape mismatch). Lists of channel widths (``downsample_channels``) map entry by entry, and entries that
    are no known width scale with the node's own width (else the smallest width ratio). Other FFN-like
    ``*intermediate_size`` fields scale the same way.
    """
    for node in nodes:
        original = originals.get(node.path, {})
        for key, value in list(node.data.items()):
            if not _SIZE_FIELD.search(key) or key in _MANAGED_KEYS or _EXCLUDED_SIZE_FIELD.search(key):
                continue
            if original.get(key) != value:
                continue  # a rule already rewrote it
            if _is_int(value) and value in widths:
                node.data[key] = widths[value]
            elif _is_int(value) and key.endswith("intermediate_size") and widths:
                # A projector's own FFN (Aya Vision's alignment_intermediate_size, 28672): an FFN width in a
                # node without a width of its own, so it scales with the decoder it projects into. Multiple
                # of 16: SwiGLU projectors halve it.
                ratio = _own_width_ratio(node, original) or next(iter(widths.values())) / next(iter(widths))
                node.data[key] = _round_to(value * ratio, 16, 16)
            elif (
                isinstance(value, list | tuple)
                and value
                and all(_is_int(v) for v in value)
                and key.endswith("channels")
            ):
                ratio = _own_width_ratio(node, original) or min(new / old for old, new in widths.items())
                node.data[key] = [widths.get(v, _round_to(v * ratio, 8, 8)) for v in value]


def _own_width_ratio(node: _Node, original: Mapping[str, Any]) -> float | None:
    """tiny / real width of ``node`` itself (its channel lists scale with it), None if it has no width."""
    key = _width_key(original)
    old, new = original.get(key), node.data.get(key)
    return new / old if _is_int(old) and _is_int(new) else None


def _separate_ffn_sizes(nodes: Sequence[_Node], fixed: set[int]) -> None:
    """Move every FFN width off every other size of the tiny model, in steps of 8.

    FFN widths are the freest sizes (nothing else is derived from them), so they are the ones that move when
    scaling gives a coincidence: Qwen3.5's routed and shared experts and its KV width all came out 32. Each
    FFN field also differs from the others, so routed, shared and dense MLPs cannot be mixed up unseen.
    """
    taken = set(fixed)
    for node in nodes:
        for key in _FFN_KEYS:
            value = node.data.get(key)
            if not _is_int(value):
                continue
            while value in taken:
                value += 8
            node.data[key] = value
            taken.add(value)


# Widths a composite config (or a tower's projector) states for the space the modalities meet in.
_JOINT_WIDTH_KEYS = ("hidden_size", "projection_dim", "embed_dim")


def _tie_to_decoder_width(
    nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]], text_node: _Node
) -> None:
    """Widths of the space image features are written into become the tiny decoder width.

    The composite config's own ``hidden_size`` / ``projection_dim`` (PaliGemma 2048, Ovis2 1536) has no heads
    of its own: it is the width the projector writes image features in, which replace token embeddings, so
    it is the decoder's width (real checkpoints state it equal to it). A tower's ``projection_dim`` whose
    real value is the real decoder width (PaliGemma's SigLIP projector output) is that width too; other
    ``projection_dim`` values (CLIP's own embedding space) keep the encoder width set by the shrinker.
    """
    width_key = _width_key(text_node.data)
    real_width, tiny_width = originals.get(text_node.path, {}).get(width_key), text_node.data.get(width_key)
    if not (_is_int(real_width) and _is_int(tiny_width)):
        return
    for node in nodes:
        if node is text_node or text_node.path[: len(node.path)] != node.path:
            continue  # only ancestors of the decoder (the composite levels)
        if _first_key(node.data, _HEAD_KEYS) is not None:
            continue  # a level with its own attention has its own width
        for key in _JOINT_WIDTH_KEYS:
            if _is_int(node.data.get(key)):
                node.data[key] = tiny_width
    for node in nodes:
        if node is not text_node and originals.get(node.path, {}).get("projection_dim") == real_width:
            node.data["projection_dim"] = tiny_width


def _map_width_multiples(nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]]) -> None:
    """Size fields that are the node's width times (1 + its number of layer taps), rescaled to the tiny taps.

    A tower that concatenates its last layer with ``k`` tapped intermediate layers outputs
    ``(k + 1) * width`` (Mllama's ``vision_output_dim`` 7680 = 6 * 1280 with 5 taps); the tiny tower has
    fewer taps and a tiny width, so the field follows both. Left alone the projector expects the real width.
    """
    for node in nodes:
        original = originals.get(node.path, {})
        key = _width_key(original)
        real_width, tiny_width = original.get(key), node.data.get(key)
        if not (_is_int(real_width) and _is_int(tiny_width)) or real_width == tiny_width:
            continue
        taps = {
            k: (len(original[k]), len(v))
            for k, v in node.data.items()
            if k.endswith(_INDEX_LIST_SUFFIXES) and isinstance(v, list) and isinstance(original.get(k), list)
        }
        for field, value in list(node.data.items()):
            if not (_SIZE_FIELD.search(field) and _is_int(value) and original.get(field) == value):
                continue
            for real_taps, tiny_taps in taps.values():
                if value == real_width * (real_taps + 1):
                    node.data[field] = tiny_width * (tiny_taps + 1)
                    break


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


def _keep_init_gain(
    nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]], text_node: _Node
) -> None:
    """Scale absolute init stds by sqrt(real width / tiny width): a tiny layer amplifies as a real one does.

    A matrix drawn at std s scales its input by about s * sqrt(fan_in): 1.3 at a real width of 4096 and
    s = 0.02, but 0.16 at a tiny width of 64. Every tiny layer then shrinks what passes through it, and a
    path through several (an image through a projector, a resampler and the decoder to the last position)
    fades below the checks' tolerances: the harness could no longer tell a model that sees the image from one
    that ignores it (Kosmos-2's image moved the first logits by 4e-5), and near-uniform attention hides
    position bugs. Each config scales by its own width; one without a width of its own (a composite level
    whose projector writes into the decoder) by the decoder's.
    """

    def width_ratio(node: _Node) -> float | None:
        key = _width_key(originals.get(node.path, {}))
        old, new = originals.get(node.path, {}).get(key), node.data.get(key)
        return old / new if _is_int(old) and _is_int(new) and new > 0 else None

    decoder_ratio = width_ratio(text_node) or 1.0
    for node in nodes:
        gain = math.sqrt(width_ratio(node) or decoder_ratio)
        for key in _INIT_STD_KEYS:
            std = node.data.get(key)
            if isinstance(std, float) and std > 0:
                node.data[key] = std * gain


def _width_map(
    nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]], text_node: _Node
) -> dict[int, int]:
    """Real width -> tiny width of every attention config; the decoder's wins where two real widths agree."""
    widths: dict[int, int] = {}
    for node in (text_node, *nodes):
        key = _width_key(originals.get(node.path, {}))
        old, new = originals.get(node.path, {}).get(key), node.data.get(key)
        if _is_int(old) and _is_int(new) and old != new:
            widths.setdefault(old, new)
    return widths


def _grid_map(nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]]) -> dict[int, int]:
    """Real patch-grid side -> tiny patch-grid side of every tower that has an image size and a patch size."""
    grids: dict[int, int] = {}
    for node in nodes:
        before = originals.get(node.path, {})
        sides = []
        for data in (before, node.data):
            size, patch = data.get("image_size"), data.get("patch_size")
            size = size[0] if isinstance(size, list | tuple) and size else size
            patch = patch[0] if isinstance(patch, list | tuple) and patch else patch
            sides.append(size // patch if _is_int(size) and _is_int(patch) else None)
        if all(sides):
            grids[sides[0]] = sides[1]
    return grids


def _position_counts(nodes: Sequence[_Node], originals: Mapping[tuple[str, ...], dict[str, Any]]) -> None:
    """Learned position tables sized by the patch grid (Molmo2's ``num_position_embeddings`` 729 = 27^2).

    A table for the real grid in a tower whose grid shrank to 2x2 is a real-sized parameter that the tiny
    model indexes with a different layout; it follows the grid (plus one where the real one had a CLS slot).
    """
    for node in nodes:
        grids = _grid_map([node], originals)
        if not grids:
            continue
        ((real, tiny),) = grids.items()
        for key, value in list(node.data.items()):
            if "position" in key and _is_int(value) and value in (real * real, real * real + 1):
                node.data[key] = tiny * tiny + (value - real * real)


def _fixed_sizes(nodes: Sequence[_Node]) -> set[int]:
    """Sizes FFN widths must avoid: every width, attention width, vocabulary and per-image token count."""
    fixed: set[int] = set()
    for node in nodes:
        data = node.data
        fixed |= _attention_widths(data)
        for key in (
            "vocab_size",
            "hidden_size",
            "embed_dim",
            "image_seq_length",
            *_POOLED_TOKEN_KEYS,
            *LATENT_COUNT_KEYS,
        ):
            if _is_int(data.get(key)):
                fixed.add(data[key])
    return fixed


def _width_sizes(nodes: Sequence[_Node]) -> set[int]:
    """Every width, attention width and FFN width of the shrunk tree (what must avoid image-token counts)."""
    sizes: set[int] = set()
    for node in nodes:
        sizes |= _attention_widths(node.data)
        for key in ("hidden_size", "embed_dim", *_FFN_KEYS):
            if _is_int(node.data.get(key)):
                sizes.add(node.data[key])
    return sizes


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


class MissingBackboneError(ImportError):
    """A sub-config's model is built by a package that is not installed (timm for timm-backed towers)."""


# transformers marks timm-built classes with requires_backends(..., ["timm"]); merely optional uses of timm
# (an `is_timm_available()` branch) must not make a family need it.
_NEEDS_TIMM = re.compile(r"requires_backends\([^)]*timm")


@cache
def _built_by_timm(config_cls: type) -> bool:
    """Whether transformers builds this config's model through timm (the config class requires it).

    Only the class itself (and its bases below ``PretrainedConfig``) counts: Gemma3n's vision config requires
    timm, its text and audio configs, defined in the same module, do not.
    """
    for cls in config_cls.__mro__:
        if cls is PretrainedConfig or not issubclass(cls, PretrainedConfig):
            break
        try:
            if _NEEDS_TIMM.search(inspect.getsource(cls)):
                return True
        except (OSError, TypeError):
            continue
    return False


def require_backbone_packages(config: PretrainedConfig) -> None:
    """Fail early, naming the extra to install, when a tower of ``config`` needs timm and timm is missing.

    Without this the failure comes from deep inside transformers at instantiation (an ImportError about
    ``TimmWrapperModel``), after the tokenizer was trained, and does not say how to get the package.

    Raises:
        MissingBackboneError: (an ``ImportError``) timm is needed but not installed.
    """
    needing = [
        path or config.model_type for path, node in _config_nodes(config, "") if _built_by_timm(type(node))
    ]
    if needing and importlib.util.find_spec("timm") is None:
        raise MissingBackboneError(
            f"{config.model_type!r} builds {', '.join(needing)} through timm, which is not installed: "
            'pip install "vlmforge[timm]"'
        )


def _config_nodes(config: PretrainedConfig, path: str) -> list[tuple[str, PretrainedConfig]]:
    nodes = [(path, config)]
    for key in config.sub_configs:
        sub = getattr(config, key, None)
        if isinstance(sub, PretrainedConfig):
            nodes.extend(_config_nodes(sub, f"{path}{key}." if path else key))
    return nodes


def shrink_config(
    config: PretrainedConfig,
    *,
    vocab_size: int | None = None,
    token_ids: Mapping[str, int | list[int]] | None = None,
    limits: ShrinkLimits = DEFAULT_LIMITS,
    vocabulary: Mapping[str, int] | None = None,
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
        vocabulary: the tiny tokenizer's vocabulary (``get_vocab()``); it becomes every ``vocabulary_map``
            field (Chameleon and Emu3 find their image and VQ-code tokens through it). Without it, such a
            map keeps the entries that fit in ``vocab_size``.

    Raises:
        MissingBackboneError: a tower of ``config`` is built through timm, which is not installed.
        ValueError: a token-id field would point outside the new vocabulary and ``token_ids`` does not say
            what it should become.
    """
    require_backbone_packages(config)
    avoid = set(limits.avoid_sizes)
    shrunk = None
    for variant in _limit_variants(limits) if avoid else (limits,):
        tree, nodes = _shrink_tree(config, vocab_size, token_ids, variant, avoid)
        _apply_vocabulary(nodes, vocabulary, vocab_size)
        shrunk = type(config).from_dict(tree)
        if not avoid & _width_sizes(nodes):
            break
    return shrunk


def _apply_vocabulary(
    nodes: Sequence[_Node], vocabulary: Mapping[str, int] | None, vocab_size: int | None
) -> None:
    """Point every ``vocabulary_map`` at the tiny tokenizer (a real one names 65536 real token ids)."""
    for node in nodes:
        for key in _VOCABULARY_MAP_KEYS:
            if vocabulary is not None and key in node.data:
                node.data[key] = dict(vocabulary)
            elif isinstance(node.data.get(key), dict) and vocab_size is not None:
                node.data[key] = {
                    k: v for k, v in node.data[key].items() if isinstance(v, int) and 0 <= v < vocab_size
                }


def _limit_variants(limits: ShrinkLimits) -> list[ShrinkLimits]:
    """Alternative budgets, tried in order when sizes must avoid ``limits.avoid_sizes``.

    Widths are clamped by the head_dim range, so moving only the width budget cannot move a KV width of
    ``kv_heads * min_head_dim``: the head_dim floor moves too.
    """
    hidden, encoder, head = limits.text_hidden, limits.encoder_hidden, limits.min_head_dim
    return [
        limits,
        replace(limits, text_hidden=hidden - 16),
        replace(limits, text_hidden=hidden + 32),
        replace(limits, min_head_dim=head + 4),
        replace(limits, text_hidden=hidden - 16, min_head_dim=head + 4),
        replace(limits, encoder_hidden=encoder - 8),
        replace(limits, text_hidden=hidden + 32, min_head_dim=head + 4, encoder_hidden=encoder - 8),
    ]


def _shrink_tree(
    config: PretrainedConfig,
    vocab_size: int | None,
    token_ids: Mapping[str, int | list[int]] | None,
    limits: ShrinkLimits,
    avoid: set[int],
) -> tuple[dict[str, Any], list[_Node]]:
    """One shrinking pass: the shrunk ``to_dict()`` tree and its nodes."""
    tree = config.to_dict()
    nodes = _walk(config, tree, (), None)
    originals = {
        n.path: {k: copy.deepcopy(v) for k, v in n.data.items() if not isinstance(v, dict)} for n in nodes
    }
    text_config = config.get_text_config(decoder=True)
    text_node = next((n for n in nodes if n.config is text_config), nodes[0])
    text_geometry = _shrink_decoder(text_node, vocab_size, limits)
    decoder_sizes = _attention_widths(text_node.data) - {text_geometry.hidden}
    # Every sub-config other than the decoder is an encoder (vision tower, audio tower, their backbones).
    depths: dict[tuple[str, ...], tuple[int, int]] = {}
    for node in nodes[1:]:
        if node is not text_node and (
            depth := _shrink_encoder_apart(node, text_geometry.hidden, decoder_sizes | avoid, limits)
        ):
            depths[node.path] = depth
    _pooled_grid(nodes)
    if text_node is not nodes[0]:
        _shrink_root(tree, depths, vocab_size)
        _remap_layer_taps(nodes, depths)
    widths = _width_map(nodes, originals, text_node)
    _patch_count_dicts(nodes, _grid_map(nodes, originals), limits)
    _position_counts(nodes, originals)
    _map_equal_dims(nodes, originals, widths)
    _tie_to_decoder_width(nodes, originals, text_node)
    _map_width_multiples(nodes, originals)
    _separate_ffn_sizes([text_node, *(n for n in nodes if n is not text_node)], _fixed_sizes(nodes) | avoid)
    _apply_all_token_ids(nodes, dict(token_ids or {}), vocab_size)
    _keep_init_gain(nodes, originals, text_node)
    return tree, nodes
