"""The image token: the config attribute holding its id, and its string as the processor spells it."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Literal

from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport, Status
from vlmforge.scaffold.research.config_values import as_int, config_value

__all__ = ["research_image_token"]

_Voucher = Literal["tokenizer", "default", "literal"]
_IMAGE_TOKEN_KEY = re.compile(r"^(image|img)_(token|patch|pad)(_token)?_(id|index)$")


@dataclass(frozen=True)
class _ConfigAttribute:
    """Where the config keeps the image token id.

    Attributes:
        attribute: the attribute name (None: none found).
        value: its value.
        owner: ``config`` or ``text config``; None for an attribute found by its key pattern.
        mapped: what ``attribute_map`` maps ``image_token_id`` to, if anything.
        candidates: keys matching the image-token pattern (when there is no ``image_token_id``).
    """

    attribute: str | None
    value: Any = None
    owner: str | None = None
    mapped: str | None = None
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class _TokenString:
    """The processor's ``image_token`` and what vouches for it.

    Attributes:
        processor: the processor's class name (None: no processor).
        token: the processor's ``image_token`` (None: it has none).
        tokenizer_id: the token's id in the processor's tokenizer.
        has_tokenizer: whether the processor has a tokenizer to ask for that id.
        vouched_by: ``tokenizer`` (the family's real tokenizer), ``default`` (the processor class's own
            ``image_token`` default) or ``literal`` (named in its ``__init__``); None when only a stand-in
            tokenizer gives it, which is no evidence.
    """

    processor: str | None
    token: str | None = None
    tokenizer_id: Any = None
    has_tokenizer: bool = False
    vouched_by: _Voucher | None = None


def research_image_token(
    config: PretrainedConfig, processor: Any, provenance: str, trusted: bool, report: ResearchReport
) -> None:
    """Config attribute holding the image token id, and the token string.

    ``trusted`` says whether the processor's tokenizer is the family's real one (a checkpoint's files or
    stored tokenizer facts); a stand-in tokenizer's token string is only accepted when it is the
    processor class's own ``image_token`` default, i.e. transformers itself says so.
    """
    attribute = _config_attribute(config)
    # Where the config has no id the adapter needs the token string: it is then also read behind the
    # processor's bare image_token_id, and vouched for by a module constant its __init__ names.
    found = _token_string(processor, trusted, needed=attribute.attribute is None)
    token, token_evidence, token_status = _token_answer_parts(found, provenance)
    if token is None and attribute.attribute:
        # The adapter reads the id from the config first; the token string is only its fallback.
        token_status, token_evidence = (
            "default",
            token_evidence + "; not needed, the config attribute suffices",
        )
    report.add(_attribute_answer(attribute, token))
    report.add(
        Answer("image_token", "Image token string", token, token_evidence, token_status, slot="image_token")
    )


# ------------------------------------------------------------------------------------------- reasoning
def _config_attribute(config: PretrainedConfig) -> _ConfigAttribute:
    """``image_token_id`` on the config or its text config, else the one key shaped like it."""
    text_config = config.get_text_config(decoder=True)
    for owner, cfg in (("config", config), ("text config", text_config)):
        if as_int(config_value(cfg, "image_token_id")) is not None:
            mapped = getattr(cfg, "attribute_map", {}).get("image_token_id")
            return _ConfigAttribute("image_token_id", cfg.image_token_id, owner, mapped)
    keys = sorted(k for k, v in config.to_dict().items() if _IMAGE_TOKEN_KEY.match(k) and isinstance(v, int))
    if len(keys) == 1:
        return _ConfigAttribute(keys[0], getattr(config, keys[0]))
    return _ConfigAttribute(None, candidates=tuple(keys))


def _token_string(processor: Any, trusted: bool, needed: bool = True) -> _TokenString:
    if processor is None:
        return _TokenString(None)
    name = type(processor).__name__
    token = getattr(processor, "image_token", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if needed and not (isinstance(token, str) and token):
        # Some processors keep only the id (IDEFICS: ``image_token_id``, looked up from a module constant):
        # the token is what the tokenizer spells that id as.
        token = _token_of_id(tokenizer, getattr(processor, "image_token_id", None))
    if not (isinstance(token, str) and token):
        return _TokenString(name)
    tokenizer_id = tokenizer.convert_tokens_to_ids(token) if tokenizer is not None else None
    vouched_by: _Voucher | None = "tokenizer" if trusted else _vouched_by_code(processor, token, needed)
    return _TokenString(name, token, tokenizer_id, tokenizer is not None, vouched_by)


def _token_of_id(tokenizer: Any, token_id: Any) -> str | None:
    """The token ``tokenizer`` spells ``token_id`` as (None without a tokenizer or an int id)."""
    if tokenizer is None or as_int(token_id) is None:
        return None
    try:
        token = tokenizer.convert_ids_to_tokens(int(token_id))
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return token if isinstance(token, str) else None


def _vouched_by_code(
    processor: Any, token: str, constants: bool = True
) -> Literal["default", "literal"] | None:
    """Whether transformers' processor code names ``token``: as the default, or literally in ``__init__``
    (a string literal there, or, with ``constants``, a module constant holding it that ``__init__`` names:
    IDEFICS' ``IMAGE_TOKEN``)."""
    init = type(processor).__init__
    parameter = inspect.signature(init).parameters.get("image_token")
    try:
        init_source = inspect.getsource(init)
    except (OSError, TypeError):
        init_source = ""
    if parameter is not None and token == parameter.default:
        return "default"
    if f'"{token}"' in init_source or f"'{token}'" in init_source:
        return "literal"
    if not constants:
        return None
    module_globals = getattr(inspect.getmodule(init), "__dict__", {})
    named = set(re.findall(r"\b[A-Za-z_]\w*\b", init_source))
    return "literal" if any(module_globals.get(n) == token for n in named) else None


# -------------------------------------------------------------------------------------------- answers
def _token_answer_parts(found: _TokenString, provenance: str) -> tuple[str | None, str, Status]:
    """(token, evidence, status) of the token-string answer, before the config-attribute fallback."""
    if found.processor is None:
        return None, f"no processor to read the token string from ({provenance})", "unknown"
    if found.token is None:
        return None, f"{found.processor} has no image_token attribute (nor an image_token_id)", "unknown"
    if found.vouched_by is None:
        evidence = (
            f"{found.processor}.image_token comes from the tokenizer, and only a stand-in "
            f"tokenizer is available ({provenance}, giving {found.token!r}): pass a checkpoint dir"
        )
        return None, evidence, "unknown"
    evidence = f"{found.processor}.image_token = {found.token!r} ({provenance})"
    if found.has_tokenizer:
        evidence += f", tokenizer id {found.tokenizer_id}"
    if found.vouched_by == "default":
        evidence += f"; it is {found.processor}'s own default"
    elif found.vouched_by == "literal":
        evidence += f"; {found.processor}.__init__ names it literally"
    return found.token, evidence, "found"


def _attribute_answer(found: _ConfigAttribute, token: str | None) -> Answer:
    if found.attribute and found.owner:
        evidence = f"{found.owner}.image_token_id = {found.value}" + (
            f" (attribute_map -> {found.mapped})" if found.mapped else ""
        )
    elif found.attribute:
        evidence = f"config.{found.attribute} = {found.value}"
    else:
        evidence = f"no image_token_id in the config (candidates: {list(found.candidates) or 'none'})"
        evidence = (
            f"{evidence}; the adapter will look the token string up instead"
            if token
            else f"unknown: {evidence} and no token string"
        )
    return Answer(
        "image_token_attribute",
        "Image token id: config attribute",
        found.attribute,
        evidence,
        "found" if found.attribute else ("default" if token else "unknown"),
        slot="image_token",
    )
