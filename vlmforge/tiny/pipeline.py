"""reference -> tiny tokenizer -> token ids -> shrunk config: shared by the model and processor builders."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

from .image_tokens import (
    grow_tile_to_token_grid,
    reconcile_image_counts,
    rescale_grid_pinpoints,
    tie_feature_width,
)
from .recipes import TokenizerRecipe, processor_literal_tokens, tokenizer_recipe
from .reference import load_reference_config, reference_checkpoints
from .shrink import DEFAULT_LIMITS, ShrinkLimits, shrink_config
from .tokenizer import TokenizerStyle, build_tiny_tokenizer

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
    """Run tokenizer -> token ids -> shrink -> agreement fixes for a checkpoint id, a model_type or a config.

    The tokenizer is byte-level BPE unless the family's processor rejects every image prompt built with it
    and accepts one built with a SentencePiece-style tokenizer (measured, see :func:`_rejects_every_prompt`).

    After shrinking, what the processor will read from the config is made to match the tiny model: a tile
    large enough for a 2x2 token grid (:func:`grow_tile_to_token_grid`), any-res canvases scaled to the tiny
    tile (:func:`rescale_grid_pinpoints`), image-count keys set to what the model makes of an image
    (:func:`reconcile_image_counts`), image features as wide as the token embeddings
    (:func:`tie_feature_width`) and, for generic recipes, the image-token id pointed at the token the
    processor really writes (:func:`_align_image_token`). ``limits`` sets the tiny sizes
    (benchmarks build larger models from the same recipe).
    """
    real_config, reference = resolve_reference(checkpoint_or_config)
    tokens = tokenizer_recipe(real_config, codes=limits.codebook_size)
    tokenizer, token_ids, config = _shrink_with(real_config, tokens, seed, limits, "byte_level")
    if _rejects_every_prompt(config, tokenizer):
        # Measured, not named: a processor that takes no image prompt with byte-level BPE may be written for
        # SentencePiece (Fuyu drops the first token of its separately tokenized image span, SentencePiece's
        # "▁"); that style is kept only when the processor then accepts one.
        candidate = _shrink_with(real_config, tokens, seed, limits, "sentencepiece")
        if not _rejects_every_prompt(candidate[2], candidate[0]):
            tokenizer, token_ids, config = candidate
    config.name_or_path = f"tiny-random/{reference}"
    if not tokens.stored:
        _align_image_token(config, tokenizer)
    return TinyRecipe(reference, real_config, tokens, tokenizer, token_ids, config)


def _shrink_with(
    real_config: PretrainedConfig,
    tokens: TokenizerRecipe,
    seed: int,
    limits: ShrinkLimits,
    style: TokenizerStyle,
) -> tuple[PreTrainedTokenizerFast, dict[str, int], PretrainedConfig]:
    """The tiny tokenizer of ``style``, the config's token ids in it, and the shrunk config agreeing
    with it."""
    tokenizer = build_tiny_tokenizer(seed=seed, style=style, **tokens.tokenizer_kwargs())
    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.token_fields.items()}
    # The vocabulary becomes every `vocabulary_map` (VQ models find their image and code tokens in it).
    config = shrink_config(
        real_config,
        vocab_size=len(tokenizer),
        token_ids=token_ids,
        limits=limits,
        vocabulary=tokenizer.get_vocab(),
    )
    # local import: model.py imports this module
    from .model import model_class_for

    model_cls = model_class_for(config)
    # A projector that downsamples more than the config states would leave one token per tile.
    grow_tile_to_token_grid(config, model_cls)
    rescale_grid_pinpoints(config, real_config)
    # Image-count keys the shrinker does not know would make the processor write real-size token counts.
    reconcile_image_counts(config, model_cls)
    # A projector output the shrinker does not recognise would feed real-width features to the decoder.
    tie_feature_width(config, model_cls)
    return tokenizer, token_ids, config


def _rejects_every_prompt(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast) -> bool:
    """Whether the family's processor, built on ``tokenizer``, rejects a chat prompt with an image whatever
    the template writes for the image (False when no processor can be built: nothing was measured)."""
    # local import: processor.py imports this module
    from .processor import accepted_image_placeholder, processor_for_config

    template = tokenizer.chat_template  # building the processor fills in the template's image placeholder
    try:
        processor = processor_for_config(config, tokenizer)
        processor.tokenizer.chat_template = template
        return accepted_image_placeholder(processor, config) is None
    except Exception:  # the agreement check after building reports processors that cannot be built
        return False
    finally:
        tokenizer.chat_template = template


_IMAGE_TOKEN_FIELDS = ("image_token_id", "image_token_index")


def expanded_image_tokens(processor: ProcessorMixin, config: PretrainedConfig) -> Counter[int]:
    """Token ids the processor adds to a one-image chat prompt for the image, with their counts."""
    # local import: processor.py imports this module
    from .processor import PROBE_MESSAGES, probe_image

    prompt = processor.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True)
    with_image = processor(text=[prompt], images=[probe_image(config)], return_tensors="pt")["input_ids"][0]
    text_only = processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return Counter(with_image.tolist()) - Counter(list(text_only))


def _align_image_token(config: PretrainedConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    """Point the config's image-token id at the token the processor really expands an image into.

    A generic recipe guesses the image token from the processor's code; some processors write a different
    token than the one they look for (Ovis2 finds ``<image>`` and writes ``<IMG_START><IMG_ATOM>...``). The
    model must count the written one: the most repeated added token (the processor's own ``image_token_id``
    on a tie). Left alone when the config's token is among the added ones, when the image adds no token but a
    BOS / EOS (Mllama's processor keeps the text's one ``<|image|>`` per image) or the processor cannot be
    probed.
    """
    # local import: processor.py imports this module
    from .processor import processor_for_config

    field = next((f for f in _IMAGE_TOKEN_FIELDS if isinstance(getattr(config, f, None), int)), None)
    if field is None:
        return
    try:
        processor = processor_for_config(config, tokenizer)
        added = expanded_image_tokens(processor, config)
    except Exception:  # the agreement check after building reports processors that cannot take an image
        return
    if getattr(config, field) in added:
        # Written as the processor expands an image (an ordinary SentencePiece piece, like Fuyu's
        # |SPEAKER|, counts as much as an added token).
        return
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    # A sequence boundary the processor adds (Mllama's prepends the BOS) is no image token.
    boundaries = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    added = Counter({i: n for i, n in added.items() if i in special and i not in boundaries})
    if not added:
        return
    own = getattr(processor, "image_token_id", None)
    image_token_id = max(added, key=lambda i: (added[i], i == own))
    setattr(config, field, image_token_id)
    _assign_marker_tokens(config, tokenizer, processor, {image_token_id, own})


def _assign_marker_tokens(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerFast,
    processor: ProcessorMixin,
    used: set[int | None],
) -> None:
    """Give a list-valued token field the processor's marker tokens when their numbers match.

    Ovis2 embeds its five ``visual_indicator_token_ids`` (the real ``<IMG_START>``, ``<IMG_GRID>``...) from
    the image; a placeholder id per entry would never occur in a prompt. The processor's special-looking
    literals other than the image token(s), in order of appearance, are those markers when there are exactly
    as many of them as entries.
    """
    literals = [
        t for t in processor_literal_tokens(type(processor)) if tokenizer.convert_tokens_to_ids(t) not in used
    ]
    markers = [tokenizer.convert_tokens_to_ids(t) for t in literals]
    for key, value in config.to_diff_dict().items():
        if (
            key.endswith("_token_ids")
            and isinstance(value, list)
            and len(value) == len(markers) > 1
            and all(isinstance(m, int) for m in markers)
        ):
            setattr(config, key, markers)
