"""A tiny tokenizer trained in-process (no hub access), with a family's special tokens.

Two styles, as the real tokenizers come: byte-level BPE (GPT-2 / Qwen / Llama 3, the default) and
SentencePiece (a Unigram model over ``▁``-marked words with a dummy prefix, byte fallback: Llama 2 /
Persimmon). Some processors depend on the SentencePiece style: Fuyu's tokenizes its image span on its own
and drops the first token, the ``▁`` SentencePiece puts before its ordinary ``|SPEAKER|`` pieces.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["TINY_CORPUS", "TokenizerStyle", "build_tiny_tokenizer"]

_UNKNOWN = "<unk>"
TokenizerStyle = Literal["byte_level", "sentencepiece"]
SENTENCEPIECE_SPACE = "\u2581"

# Small built-in corpus: plain English plus the kind of text VLM prompts contain (questions about images, UI
# and document words, digits), so that typical test prompts tokenize into a few dozen tokens.
TINY_CORPUS: tuple[str, ...] = (
    "What is shown in this image? Describe the picture in one sentence.",
    "The image shows a small red square on a white background.",
    "A photo of a cat sitting on a wooden table next to a cup of coffee.",
    "A dog is running across the green grass in the park on a sunny day.",
    "There are three people standing in front of a blue building.",
    "The chart compares the sales of two products over twelve months.",
    "Read the text in the document and answer the question.",
    "Click the button at the top left corner of the screen to open the menu.",
    "The quick brown fox jumps over the lazy dog.",
    "How many objects are there in the image? There are 2 circles and 3 squares.",
    "Is the light on or off? The light is on and the room is bright.",
    "Where is the car? The car is parked on the street near the tree.",
    "What color is the shirt? The shirt is blue with white stripes.",
    "Please answer with a single word: yes or no.",
    "The user asked the assistant a question and the assistant gave a helpful answer.",
    "You are a helpful assistant that looks at images and answers questions about them.",
    "The left image is larger than the right image, and both are in color.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 24 28 32 64 100 224 336 512 1024.",
    "The model reads the image, then the text, and then it writes the answer token by token.",
    "A bird flies over the river while a boat moves slowly to the other side.",
    "The table has four rows and three columns with names, dates and prices.",
    "Zoom in on the bottom right part of the image and describe what you see there.",
    "First, look at the image carefully. Second, think about the question. Finally, answer it.",
    "The sky is blue, the sun is yellow, and the clouds are white and soft.",
)


def _corpus(seed: int) -> list[str]:
    # Seed 0 uses the whole corpus; other seeds drop a seeded eighth of it, giving a different but equally
    # valid merge table (useful to catch code that hard-codes tiny token ids).
    sentences = list(TINY_CORPUS)
    if seed:
        rng = random.Random(seed)
        drop = set(rng.sample(range(len(sentences)), len(sentences) // 8))
        sentences = [s for i, s in enumerate(sentences) if i not in drop]
    # Repetition gives merges beyond single words a count large enough to be learned.
    return sentences * 4


def build_tiny_tokenizer(
    special_tokens: Sequence[str],
    *,
    chat_template: str,
    seed: int = 0,
    leading_special_tokens: Sequence[str] = (),
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    unk_token: str | None = None,
    add_bos_token: bool = False,
    named_tokens: Mapping[str, str] | None = None,
    padding_side: str = "left",
    vocab_size: int = 384,
    style: TokenizerStyle = "byte_level",
) -> PreTrainedTokenizerFast:
    """Train a deterministic tokenizer (~``vocab_size`` + specials) on a built-in corpus.

    Args:
        special_tokens: special tokens appended after the learned vocabulary, each a single added token (like
            ``<image>`` or ``<|image_pad|>`` sitting above the base vocabulary of the real tokenizers).
        chat_template: Jinja chat template attached to the tokenizer.
        seed: selects the training corpus (see ``_corpus``); same seed, same tokenizer.
        leading_special_tokens: special tokens given the first ids (``<unk> <s> </s>`` of Llama,
            ``<|endoftext|> <|im_start|> <|im_end|>`` of SmolLM2).
        bos_token, eos_token, pad_token, unk_token: which of the special tokens play these roles.
        add_bos_token: prepend ``bos_token`` when encoding with special tokens (Llama-style).
        named_tokens: model-specific named tokens exposed as tokenizer attributes (``tokenizer.image_token``
            and ``tokenizer.image_token_id``), which many processors read; added as special tokens.
        padding_side: ``"left"`` by default because batched generation and last-position comparisons need it.
        vocab_size: size of the learned part (bytes + merges + leading specials).
        style: ``"byte_level"`` (BPE over bytes, every special token an added token) or ``"sentencepiece"``
            (see :func:`_sentencepiece`: the named tokens that play no role become ordinary vocabulary
            pieces, written after a ``▁`` at the start of a text, as SentencePiece vocabularies hold them).
    """
    leading = list(dict.fromkeys(leading_special_tokens))
    trailing = [t for t in dict.fromkeys(special_tokens) if t not in leading]
    roles = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
    named = dict(named_tokens or {})
    required = [*roles.values(), *named.values()]
    unknown = [t for t in required if t is not None and t not in leading and t not in trailing]
    trailing += list(dict.fromkeys(unknown))

    if style == "sentencepiece":
        # Named tokens that play no role are ordinary pieces of a SentencePiece vocabulary (Persimmon's
        # |SPEAKER|); passing them to the fast tokenizer by name would make them added tokens again.
        role_tokens = {t for t in roles.values() if t is not None}
        pieces = [t for t in dict.fromkeys(named.values()) if t not in role_tokens and t not in leading]
        trailing = [t for t in trailing if t not in pieces]
        named = {name: token for name, token in named.items() if token not in pieces}
        tokenizer = _sentencepiece(leading, pieces, seed, vocab_size)
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[AddedToken(t, special=True, normalized=False) for t in leading],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in trailing])
    if add_bos_token and bos_token is not None:
        bos_id = tokenizer.token_to_id(bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, bos_id)],
        )
    elif style == "byte_level":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        chat_template=chat_template,
        padding_side=padding_side,
        model_max_length=4096,
        **{role: token for role, token in roles.items() if token is not None},
        **named,
    )
    return fast


def _sentencepiece(leading: Sequence[str], pieces: Sequence[str], seed: int, vocab_size: int) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer: ``leading`` first, ``pieces`` ordinary (and preferred) pieces.

    Words are marked with ``▁`` and the text gets a dummy-prefix ``▁`` (so a text starting with a piece
    encodes as ``▁``, then the piece); 256 ``<0xNN>`` byte pieces cover any character the corpus lacks.
    """
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SENTENCEPIECE_SPACE, prepend_scheme="first"
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(leading),
        unk_token=None,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    learned = [(piece, score) for piece, score in _unigram_vocab(tokenizer) if piece not in pieces]
    byte_pieces = [(f"<0x{byte:02X}>", min(s for _, s in learned) - 1.0) for byte in range(256)]
    # Unigram needs an unknown piece even with byte fallback (SentencePiece keeps <unk> too).
    unknown = [] if any(piece == _UNKNOWN for piece, _ in learned) else [(_UNKNOWN, 0.0)]
    # Score 0 (probability 1) beats any split: a named piece is always one token.
    vocab = [*learned, *((piece, 0.0) for piece in pieces), *byte_pieces, *unknown]
    unk_id = next(i for i, (piece, _) in enumerate(vocab) if piece == _UNKNOWN)
    model = models.Unigram(vocab, unk_id=unk_id, byte_fallback=True)
    rebuilt = Tokenizer(model)
    rebuilt.pre_tokenizer = tokenizer.pre_tokenizer
    rebuilt.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement=SENTENCEPIECE_SPACE, prepend_scheme="first")]
    )
    rebuilt.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in leading])
    return rebuilt


def _unigram_vocab(tokenizer: Tokenizer) -> list[tuple[str, float]]:
    """``(piece, score)`` of a trained Unigram model, in id order (read from its serialised form)."""
    return [(piece, float(score)) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
