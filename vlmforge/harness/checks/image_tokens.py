"""Image-token checks: the adapter's image token is real, and image features land exactly on it."""

from __future__ import annotations

import torch
from torch import nn

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check, declared_equals_measured
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.measure import measure_min_image_tokens
from vlmforge.harness.probes import single_probe, vision_written_positions


def embedding_rows(embedding: nn.Module) -> int:
    """How many token ids ``embedding`` looks up: its weight's rows, plus those of the embedding tables it
    keeps apart for extra tokens (IDEFICS' decoupled embedding: ``<image>`` and
    ``<fake_token_around_image>`` live in ``additional_embedding``, ids after the weight's rows)."""
    extra = sum(child.num_embeddings for child in embedding.children() if isinstance(child, nn.Embedding))
    return embedding.weight.shape[0] + extra


def image_positions_from_mask(vlm: HookedVLM) -> str | None:
    """A ``not_applicable`` predicate: the family has no image token id, a processor mask places images.

    Declared by ``image_token.position_mask`` with neither a config attribute nor a token string; whether
    that mask marks exactly the positions the vision side writes is what ``image_token_count`` checks.
    """
    source = vlm.adapter.spec.image_token
    if source.position_mask is None or source.config_attribute is not None or source.token is not None:
        return None
    return (
        f"the {vlm.adapter.spec.name} family has no single image token: image positions come from the "
        f"processor output {source.position_mask!r}"
    )


@check(not_applicable=image_positions_from_mask)
def image_token_in_vocab(vlm: HookedVLM) -> CheckResult:
    """``get_image_token_id()`` is a token of the tokenizer and a row of the embedding."""
    token_id = vlm.adapter.get_image_token_id()
    tokenizer = vlm.prompt_processor.tokenizer
    vocab = len(tokenizer)
    rows = embedding_rows(vlm.adapter.language_model.get_input_embeddings())
    if not 0 <= token_id < min(vocab, rows):
        raise CheckFailure(
            f"image token id {token_id} outside the vocabulary ({vocab} tokens, {rows} embedding rows)",
            hint="get_image_token_id() / the spec's image_token source",
        )
    return CheckResult(detail=f"id {token_id} = {tokenizer.convert_ids_to_tokens(token_id)!r}")


def images_through_cross_attention(vlm: HookedVLM) -> str | None:
    """A ``not_applicable`` predicate: the image reaches the decoder through cross-attention.

    Cross-attention layers (``spec.modules.cross_attention``) or cross-attention blocks between the layers
    (``spec.modules.cross_attention_blocks``) take the image features as keys and values, so no image
    feature is merged into the input embeddings at the image tokens. Which is structural (found on the
    built model): a spec declaring a module the model lacks leaves the check applicable, and it then fails.
    """
    how = vlm.adapter.image_cross_attention()
    if how is None:
        return None
    return f"images reach the decoder through {how}, not through the input embeddings"


@check(not_applicable=images_through_cross_attention)
def image_token_count(vlm: HookedVLM) -> CheckResult:
    """Image features land exactly on the image-token positions (count and place).

    The image-token positions are ``image_token_mask`` (the image token's, or the declared processor
    mask's). The vision side may also write the marker tokens the spec declares
    (``image_token.marker_ids_attribute``, e.g. Ovis2's visual indicators); any other position it writes,
    an image-token position it leaves alone, or a declared marker it does not write fails the check.
    """
    inputs = single_probe(vlm)
    ids = inputs["input_ids"]
    is_image = vlm.adapter.image_token_mask(inputs)
    mask_key = vlm.adapter.spec.image_token.position_mask
    source = f"processor output {mask_key!r}" if mask_key else f"id {vlm.adapter.get_image_token_id()}"
    if not is_image.any():
        raise CheckFailure(
            f"processed inputs contain no image token ({source})",
            hint="get_image_token_id() / image_token.position_mask and the processor's image placeholder",
        )
    markers = vlm.adapter.get_image_marker_token_ids()
    is_marker = torch.isin(ids, torch.tensor(markers, dtype=ids.dtype)) & ~is_image
    replaced = vision_written_positions(vlm, inputs).to(ids.device)
    if not torch.equal(replaced, is_image | is_marker):
        missing = int((is_image & ~replaced).sum())
        extra = replaced & ~is_image & ~is_marker
        untouched = int((is_marker & ~replaced).sum())
        extra_ids = sorted(set(ids[extra].tolist()))
        declared = f", {untouched} declared marker positions untouched" if markers else ""
        raise CheckFailure(
            f"{int(is_image.sum())} positions are image tokens ({source}) but the vision tower's "
            f"{int(replaced.sum())} features replaced other positions "
            f"({missing} image-token positions untouched, "
            f"{int(extra.sum())} non-image positions replaced (token ids {extra_ids}){declared})",
            hint="get_image_token_id() returns the wrong token (or image_token.position_mask names the "
            "wrong processor output), or the spec's image_token.marker_ids_attribute does not list the "
            "marker tokens the vision side embeds",
        )
    detail = f"{int(is_image.sum())} image tokens ({source}) == {int(is_image.sum())} image features"
    if markers:
        path = vlm.adapter.spec.image_token.marker_ids_attribute
        detail += f"; + {int(is_marker.sum())} marker positions from config.{path} {list(markers)}"
    return CheckResult(detail=detail)


@check
def image_min_tokens(vlm: HookedVLM) -> CheckResult:
    """Declared ``min_image_tokens`` is the fewest image tokens of an image the model runs on.

    The property tests draw only images with at least that many tokens, so a declaration above what the
    model needs would hide images it handles, and one below would let the property tests crash.
    """
    return declared_equals_measured(vlm, "min_image_tokens", measure_min_image_tokens(vlm))
