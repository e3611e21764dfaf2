"""Image-token checks: the adapter's image token is real, and image features land exactly on it."""

from __future__ import annotations

import torch

from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.probes import language_model_inputs_embeds, single_probe


@check
def image_token_in_vocab(vlm: HookedVLM) -> CheckResult:
    """``get_image_token_id()`` is a token of the tokenizer and a row of the embedding."""
    token_id = vlm.adapter.get_image_token_id()
    tokenizer = vlm.prompt_processor.tokenizer
    vocab = len(tokenizer)
    rows = vlm.adapter.language_model.get_input_embeddings().weight.shape[0]
    if not 0 <= token_id < min(vocab, rows):
        raise CheckFailure(
            f"image token id {token_id} outside the vocabulary ({vocab} tokens, {rows} embedding rows)",
            hint="get_image_token_id() / the spec's image_token source",
        )
    return CheckResult(detail=f"id {token_id} = {tokenizer.convert_ids_to_tokens(token_id)!r}")


@check
def image_token_count(vlm: HookedVLM) -> CheckResult:
    """Image features land exactly on the image-token positions (count and place)."""
    inputs = single_probe(vlm)
    token_id = vlm.adapter.get_image_token_id()
    ids = inputs["input_ids"]
    is_image = ids == token_id
    if not is_image.any():
        raise CheckFailure(
            f"processed inputs contain no image token (id {token_id})",
            hint="get_image_token_id() and the processor's image placeholder",
        )
    merged = language_model_inputs_embeds(vlm, inputs)
    text = vlm.adapter.language_model.get_input_embeddings()(ids)
    replaced = (merged != text).any(dim=-1)
    if not torch.equal(replaced, is_image):
        missing = int((is_image & ~replaced).sum())
        extra = int((replaced & ~is_image).sum())
        raise CheckFailure(
            f"{int(is_image.sum())} tokens have id {token_id} but the vision tower's "
            f"{int(replaced.sum())} features replaced other positions "
            f"({missing} image-token positions untouched, "
            f"{extra} non-image positions replaced)",
            hint="get_image_token_id() returns the wrong token",
        )
    return CheckResult(detail=f"{int(is_image.sum())} image tokens == {int(replaced.sum())} image features")
