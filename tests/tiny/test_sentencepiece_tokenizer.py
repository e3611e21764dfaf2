"""The SentencePiece tokenizer style, and the tiny factory choosing it by measuring the processor."""

from __future__ import annotations

from tokenizers import models

from vlmforge.tiny import build_tiny_processor
from vlmforge.tiny.pipeline import tiny_recipe
from vlmforge.tiny.processor import PROBE_MESSAGES, probe_image
from vlmforge.tiny.tokenizer import build_tiny_tokenizer

_SPECIALS = ["<|endoftext|>", "<|im_end|>", "|SPEAKER|", "|NEWLINE|", "<s>"]
_NAMED = {"image_token": "|SPEAKER|", "image_newline_token": "|NEWLINE|"}


def _tokenizer(style: str):
    return build_tiny_tokenizer(
        _SPECIALS, chat_template="x", eos_token="<|im_end|>", pad_token="<|endoftext|>", named_tokens=_NAMED,
        style=style,
    )  # fmt: skip


def test_named_tokens_are_ordinary_pieces_after_a_dummy_prefix() -> None:
    tokenizer = _tokenizer("sentencepiece")
    ids = tokenizer("|SPEAKER||SPEAKER||NEWLINE|<s>", add_special_tokens=False)["input_ids"]
    # SentencePiece's dummy prefix first (what FuyuProcessor strips off), then one piece per token.
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581", "|SPEAKER|", "|SPEAKER|", "|NEWLINE|", "<s>"]
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    assert "|SPEAKER|" not in added and "<s>" in added and "<|im_end|>" in added
    # Any text round-trips (byte fallback covers what the corpus lacks).
    text = "Describe the image: é€ 42"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_byte_level_stays_the_default() -> None:
    tokenizer = _tokenizer("byte_level")
    assert isinstance(tokenizer.backend_tokenizer.model, models.BPE)
    ids = tokenizer("|SPEAKER||NEWLINE|", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["|SPEAKER|", "|NEWLINE|"]
    assert (
        build_tiny_tokenizer(_SPECIALS, chat_template="x").get_vocab()
        == build_tiny_tokenizer(_SPECIALS, chat_template="x", style="byte_level").get_vocab()
    )


def test_the_style_is_chosen_by_what_the_processor_accepts() -> None:
    # Fuyu's processor drops the first token of its image span (SentencePiece's "▁"): with byte-level BPE
    # it rejects every image prompt, so the factory measures that and switches; llava's keeps BPE.
    fuyu = tiny_recipe("fuyu")
    assert isinstance(fuyu.tokenizer.backend_tokenizer.model, models.Unigram)
    assert isinstance(tiny_recipe("llava").tokenizer.backend_tokenizer.model, models.BPE)
    processor = build_tiny_processor("fuyu")
    prompt = processor.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True)
    ids = processor(text=[prompt], images=[probe_image(fuyu.config)], return_tensors="pt")["input_ids"][0]
    image_tokens = int((ids == fuyu.config.image_token_id).sum())
    newline = processor.tokenizer.convert_tokens_to_ids("|NEWLINE|")
    rows = int((ids == newline).sum())
    assert image_tokens > 0 and rows > 0 and image_tokens % rows == 0  # whole rows, none dropped
