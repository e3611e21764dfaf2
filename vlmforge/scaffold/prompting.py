"""Prompt-side research: the image token, the processor, and the chat-template conventions.

Chat-template answers are *measured* by rendering probe messages with the real processor (from a
checkpoint directory) or the tiny one. A tiny processor without a stored copy of the family's
template renders a generic ChatML stand-in; answers from it are reported as ``unknown``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from typing import Any

import transformers
from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport, ResolvedSource, Status
from vlmforge.scaffold.sources import offline, quiet
from vlmforge.scaffold.structure import as_int, config_value
from vlmforge.tiny import tokenizer_recipe

__all__ = ["PROBE_PREFILL", "PROBE_TEXT", "has_stored_template", "load_processor", "research_prompting"]

PROBE_TEXT = "Describe this picture in one sentence."
PROBE_PREFILL = "The picture shows"
_IMAGE_TOKEN_KEY = re.compile(r"^(image|img)_(token|patch|pad)(_token)?_(id|index)$")
# Image-processor attributes that make the number of image tokens depend on the image (transformers names).
_DYNAMIC_RESIZE_ATTRIBUTES = (
    "min_pixels",
    "max_pixels",
    "do_image_splitting",
    "image_grid_pinpoints",
    "do_pan_and_scan",
    "crop_to_patches",
    "max_image_tiles",
    "max_patches",
)


# ----------------------------------------------------------------------------------------- image token
def _research_image_token(
    config: PretrainedConfig, processor: Any, provenance: str, trusted: bool, report: ResearchReport
) -> None:
    """Config attribute holding the image token id, and the token string.

    ``trusted`` says whether the processor's tokenizer is the family's real one (a checkpoint's files or
    stored tokenizer facts); a stand-in tokenizer's token string is only accepted when it is the
    processor class's own ``image_token`` default, i.e. transformers itself says so.
    """
    text_config = config.get_text_config(decoder=True)
    attribute, value, evidence = None, None, ""
    for owner, cfg in (("config", config), ("text config", text_config)):
        if as_int(config_value(cfg, "image_token_id")) is not None:
            mapped = getattr(cfg, "attribute_map", {}).get("image_token_id")
            attribute, value = "image_token_id", cfg.image_token_id
            evidence = f"{owner}.image_token_id = {value}" + (
                f" (attribute_map -> {mapped})" if mapped else ""
            )
            break
    if attribute is None:
        keys = sorted(
            k for k, v in config.to_dict().items() if _IMAGE_TOKEN_KEY.match(k) and isinstance(v, int)
        )
        if len(keys) == 1:
            attribute, value = keys[0], getattr(config, keys[0])
            evidence = f"config.{keys[0]} = {value}"
        else:
            evidence = f"no image_token_id in the config (candidates: {keys or 'none'})"
    token = getattr(processor, "image_token", None) if processor is not None else None
    token = token if isinstance(token, str) and token else None
    token_status: Status = "found"
    if processor is None:
        token_evidence = f"no processor to read the token string from ({provenance})"
    elif token is None:
        token_evidence = f"{type(processor).__name__} has no image_token attribute"
    else:
        token_evidence = f"{type(processor).__name__}.image_token = {token!r} ({provenance})"
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            token_evidence += f", tokenizer id {tokenizer.convert_tokens_to_ids(token)}"
        if not trusted:
            # Trust a stand-in tokenizer's answer only where transformers' processor code itself names the
            # token: as the ``image_token`` default, or as a string literal in ``__init__``.
            init = type(processor).__init__
            parameter = inspect.signature(init).parameters.get("image_token")
            try:
                init_source = inspect.getsource(init)
            except (OSError, TypeError):
                init_source = ""
            if parameter is not None and token == parameter.default:
                token_evidence += f"; it is {type(processor).__name__}'s own default"
            elif f'"{token}"' in init_source or f"'{token}'" in init_source:
                token_evidence += f"; {type(processor).__name__}.__init__ names it literally"
            else:
                token_evidence = (
                    f"{type(processor).__name__}.image_token comes from the tokenizer, and only a stand-in "
                    f"tokenizer is available ({provenance}, giving {token!r}): pass a checkpoint dir"
                )
                token, token_status = None, "unknown"
    if token is None and token_status == "found":
        token_status = "unknown"
    if token is None and attribute:
        # The adapter reads the id from the config first; the token string is only its fallback.
        token_status, token_evidence = (
            "default",
            token_evidence + "; not needed, the config attribute suffices",
        )
    report.add(
        Answer(
            "image_token_attribute",
            "Image token id: config attribute",
            attribute,
            evidence
            if attribute
            else f"{evidence}; the adapter will look the token string up instead"
            if token
            else f"unknown: {evidence} and no token string",
            "found" if attribute else ("default" if token else "unknown"),
            slot="image_token",
        )
    )
    report.add(
        Answer("image_token", "Image token string", token, token_evidence, token_status, slot="image_token")
    )


# ---------------------------------------------------------------------------------- processor research
def load_processor(
    resolved: ResolvedSource, trust_remote_code: bool, tiny_processor: Any, tiny_error: str | None
) -> tuple[Any, str]:
    """The real processor from the checkpoint files if present, else the tiny one; and where it came from."""
    if resolved.files_dir is not None:
        has_files = any(
            (resolved.files_dir / name).is_file()
            for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
        )
        if has_files:
            with offline(), quiet():
                try:
                    processor = transformers.AutoProcessor.from_pretrained(
                        resolved.files_dir, local_files_only=True, trust_remote_code=trust_remote_code
                    )
                    return processor, f"real processor from {resolved.files_dir}"
                except Exception as error:  # fall back to the tiny processor, but say so
                    return tiny_processor, f"tiny processor (loading the real one failed: {error})"
    if tiny_processor is None:
        return None, f"no processor (no processor files with the source; {tiny_error})"
    return tiny_processor, "tiny processor of vlmforge.tiny"


def _research_processor(
    config: PretrainedConfig, processor: Any, provenance: str, report: ResearchReport
) -> None:
    if processor is None:
        report.add(
            Answer(
                "processor_class",
                "Processor / image processor class",
                None,
                "unknown: no processor",
                "unknown",
            )
        )
        report.add(
            Answer(
                "image_resizing",
                "Image preprocessing: fixed or dynamic",
                None,
                "unknown: no processor",
                "unknown",
            )
        )
        return
    image_processor = getattr(processor, "image_processor", None)
    report.add(
        Answer(
            "processor_class",
            "Processor / image processor class",
            f"{type(processor).__name__} / {type(image_processor).__name__ if image_processor else '-'}",
            f"{provenance}; transformers' processor mapping for {config.model_type!r}",
        )
    )
    if image_processor is None:
        report.add(
            Answer(
                "image_resizing",
                "Image preprocessing: fixed or dynamic",
                None,
                "unknown: the processor has no image processor",
                "unknown",
            )
        )
        return
    # Read the *class* defaults: the tiny processor shrinks sizes, but which knobs exist is what matters.
    image_cls = type(image_processor)
    knobs = {
        name: getattr(image_cls, name, getattr(image_processor, name, None))
        for name in _DYNAMIC_RESIZE_ATTRIBUTES
        if getattr(image_cls, name, getattr(image_processor, name, None)) not in (None, False)
    }
    size = getattr(image_cls, "size", None) or getattr(image_processor, "size", None)
    crop = getattr(image_cls, "crop_size", None) if getattr(image_cls, "do_center_crop", False) else None
    if knobs:
        value, evidence = (
            "dynamic",
            f"{image_cls.__name__} has " + ", ".join(f"{k}={v}" for k, v in knobs.items()),
        )
    elif isinstance(size, dict) and "longest_edge" in size and crop is None:
        value = "dynamic"
        evidence = (
            f"{image_cls.__name__} resizes keeping the aspect ratio within size={size} and does not crop"
        )
    elif isinstance(crop, dict) and {"height", "width"} <= crop.keys():
        value, evidence = "fixed", f"{image_cls.__name__} resizes (size={size}) then center-crops to {crop}"
    elif isinstance(size, dict) and {"height", "width"} <= size.keys():
        value, evidence = "fixed", f"{image_cls.__name__}.size = {size}"
    else:
        value, evidence = (
            "unknown",
            f"unknown: {image_cls.__name__}.size = {size} and no dynamic-resolution knob",
        )
    report.add(
        Answer(
            "image_resizing",
            "Image preprocessing: fixed or dynamic",
            value,
            evidence,
            "found" if value != "unknown" else "unknown",
        )
    )


def _render(processor: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    with quiet():
        return processor.apply_chat_template(messages, tokenize=False, **kwargs)


def _inserted(with_image: str, without: str) -> tuple[int, str]:
    """Where ``with_image`` differs from ``without``: (start index, inserted text)."""
    prefix = 0
    while prefix < min(len(with_image), len(without)) and with_image[prefix] == without[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(with_image), len(without)) - prefix
        and with_image[-1 - suffix] == without[-1 - suffix]
    ):
        suffix += 1
    return prefix, with_image[prefix : len(with_image) - suffix]


def _user(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def _research_chat_template(
    processor: Any, provenance: str, stored_template: bool, model_class: type | None, report: ResearchReport
) -> None:
    """image_in_message, image_before_text, continue_final_message: measured on the chat template."""
    from PIL import Image

    template = getattr(processor, "chat_template", None) if processor is not None else None
    q_in, q_order, q_prefill = (
        "Image given inside the message (not a bare placeholder)",
        "Image before text in the user turn",
        "continue_final_message renders an assistant prefill",
    )
    if processor is None:
        reason = f"unknown: {provenance}"
        for key, question in (
            ("image_in_message", q_in),
            ("image_before_text", q_order),
            ("continue_final_message", q_prefill),
        ):
            report.add(Answer(key, question, None, reason, "unknown", slot=key))
        report.add(
            Answer(
                "custom_processor",
                "Family needs a processor subclass",
                None,
                reason,
                "unknown",
                slot="processor",
            )
        )
        return
    if not template:
        reason = f"unknown: {provenance} has no chat template; prompts must be built by a processor subclass"
        for key, question in (
            ("image_in_message", q_in),
            ("image_before_text", q_order),
            ("continue_final_message", q_prefill),
        ):
            report.add(Answer(key, question, None, reason, "unknown"))
        report.add(
            Answer(
                "custom_processor",
                "Family needs a processor subclass",
                True,
                reason,
                "hand_edit",
                slot="processor",
            )
        )
        return
    caveat = (
        ""
        if stored_template
        else (
            " (the tiny processor has no stored copy of this family's real template and uses a generic "
            "ChatML one, so this is NOT evidence about the real template: check with a checkpoint dir)"
        )
    )
    status_measured: Status = "measured" if stored_template else "unknown"
    image = Image.new("RGB", (32, 32))
    text_item = {"type": "text", "text": PROBE_TEXT}
    try:
        bare = _render(processor, _user([text_item]), add_generation_prompt=True)
        placeholder = _render(processor, _user([{"type": "image"}, text_item]), add_generation_prompt=True)
        in_message = _render(
            processor, _user([{"type": "image", "image": image}, text_item]), add_generation_prompt=True
        )
    except Exception as error:
        reason = f"unknown: {provenance}'s chat template failed to render a user turn ({error})"
        for key, question in (("image_in_message", q_in), ("image_before_text", q_order)):
            report.add(Answer(key, question, None, reason, "unknown"))
        in_message = placeholder = bare = ""
    if bare:
        _, marker = _inserted(placeholder, bare)
        if marker:
            report.add(
                Answer(
                    "image_in_message",
                    q_in,
                    False,
                    f"the bare {{'type': 'image'}} placeholder renders {marker!r} ({provenance}){caveat}",
                    status_measured,
                    slot="image_in_message",
                )
            )
        else:
            _, marker = _inserted(in_message, bare)
            report.add(
                Answer(
                    "image_in_message",
                    q_in,
                    bool(marker) or None,
                    "the bare placeholder renders nothing; with the image inside the item it renders "
                    f"{marker!r}"
                    if marker
                    else f"unknown: the template renders no image marker either way ({provenance})",
                    status_measured if marker else "unknown",
                    slot="image_in_message",
                )
            )
        _research_order(
            processor, image, marker, provenance, caveat, stored_template, model_class, report, q_order
        )
    # continue_final_message: the rendered prompt must end with the prefill (nothing closes the turn).
    prefill_messages = [
        *_user([{"type": "image"}, text_item]),
        {"role": "assistant", "content": [{"type": "text", "text": PROBE_PREFILL}]},
    ]
    try:
        rendered = _render(processor, prefill_messages, continue_final_message=True)
        works = rendered.endswith(PROBE_PREFILL)
        evidence = f"renders ...{rendered[-40:]!r}" + ("" if works else " (does not end with the prefill)")
    except Exception as error:  # transformers raises when it cannot find the final message to continue
        works, evidence = False, f"apply_chat_template(continue_final_message=True) raised {error}"
    report.add(
        Answer(
            "continue_final_message",
            q_prefill,
            works,
            f"{evidence} ({provenance}){caveat}",
            status_measured,
            slot="continue_final_message",
        )
    )


def _research_order(
    processor: Any,
    image: Any,
    marker: str,
    provenance: str,
    caveat: str,
    stored_template: bool,
    model_class: type | None,
    report: ResearchReport,
    question: str,
) -> None:
    """Whether the template fixes the image position; if it follows the content order, ask the docs."""
    in_message = report.value("image_in_message", False)
    item = {"type": "image", "image": image} if in_message else {"type": "image"}
    text_item = {"type": "text", "text": PROBE_TEXT}
    positions = []
    try:
        bare = _render(processor, _user([text_item]), add_generation_prompt=True)
        for content in ([item, text_item], [text_item, item]):
            rendered = _render(processor, _user(content), add_generation_prompt=True)
            at, _ = _inserted(rendered, bare)
            positions.append(at <= rendered.find(PROBE_TEXT) if PROBE_TEXT in rendered else None)
    except Exception as error:
        report.add(
            Answer("image_before_text", question, None, f"unknown: rendering failed ({error})", "unknown")
        )
        return
    status: Status = "measured" if stored_template else "unknown"
    if positions == [True, True] or positions == [False, False]:
        where = "before" if positions[0] else "after"
        report.add(
            Answer(
                "image_before_text",
                question,
                positions[0],
                f"the template puts the image {where} the text whatever the content order "
                f"({provenance}){caveat}",
                status,
                slot="image_before_text",
            )
        )
        return
    documented = _documented_order(model_class, report.value("image_token"))
    if documented is not None:
        before, evidence = documented
        report.add(
            Answer(
                "image_before_text",
                question,
                before,
                f"the template follows the content order; {evidence}",
                "found",
                slot="image_before_text",
            )
        )
        return
    report.add(
        Answer(
            "image_before_text",
            question,
            True,
            "the template follows the content order and no usage example shows the convention; "
            "image first is the default (the order the seed families were trained with)",
            "default",
            slot="image_before_text",
        )
    )


def _documented_order(model_class: type | None, image_token: str | None) -> tuple[bool, str] | None:
    """The image/text order of the usage example in the model class's ``forward`` docstring, if any."""
    forward = getattr(model_class, "forward", None) if model_class is not None else None
    doc = (inspect.getdoc(forward) or "") if forward is not None else ""
    example = doc[doc.find("Example") :] if "Example" in doc else ""
    if not example:
        return None
    where = f"{model_class.__name__}.forward docstring example"
    user = example.find('"role": "user"')
    if user >= 0:
        image_at = example.find('"type": "image"', user)
        text_at = example.find('"type": "text"', user)
        if image_at >= 0 and text_at >= 0:
            return (
                image_at < text_at,
                f"{where} lists the {'image' if image_at < text_at else 'text'} item first",
            )
    if image_token:
        for line in example.splitlines():
            match = re.search(r"prompt\s*=\s*(['\"])(.*)\1", line)
            if match and image_token in match.group(2):
                before, _, after = match.group(2).partition(image_token)
                words_before, words_after = (
                    len(re.findall(r"[A-Za-z]+", before)),
                    len(re.findall(r"[A-Za-z]+", after)),
                )
                return words_after > words_before, f"{where} prompt {match.group(2)!r}"
    return None


def has_stored_template(config: PretrainedConfig) -> bool:
    """Whether the tiny processor's chat template is a stored copy of the family's real one."""
    with contextlib.suppress(Exception):
        return bool(tokenizer_recipe(config).stored)
    return False


def research_prompting(
    config: PretrainedConfig,
    processor: Any,
    provenance: str,
    model_class: type | None,
    report: ResearchReport,
) -> None:
    """Image token, processor and chat-template answers, from ``processor`` (real or tiny)."""
    trusted = provenance.startswith("real") or has_stored_template(config)
    _research_image_token(config, processor, provenance, trusted, report)
    _research_processor(config, processor, provenance, report)
    _research_chat_template(processor, provenance, trusted, model_class, report)
    report.answers.setdefault(
        "custom_processor",
        Answer(
            "custom_processor",
            "Family needs a processor subclass",
            False,
            "the chat template renders image placeholders; the generic VLMProcessor suffices",
        ),
    )
