"""Chat-template conventions, measured by rendering probe messages with the processor.

``image_in_message`` (the image travels inside the content item), ``image_before_text`` (where the
template puts the image) and ``continue_final_message`` (an assistant prefill renders open-ended). A
tiny processor without a stored copy of the family's template renders a generic ChatML stand-in, so
its measurements are reported as ``unknown``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vlmforge.core.chat_template import (
    PROBE_PREFILL,
    PROBE_TEXT,
    Measured,
    inserted,
    measure_continue_final_message,
    measure_image_in_message,
)
from vlmforge.scaffold.report import Answer, ResearchReport, Status
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["PROBE_PREFILL", "PROBE_TEXT", "research_chat_template"]

# Said of a template-dependent convention left to the runtime when no real template is at hand.
_MEASURED_AT_LOAD = (
    "left to the runtime: {provenance} has no real chat template of this family offline, and this convention "
    "is a property of the template a checkpoint ships; VLMProcessor measures it on the loaded processor's "
    "template (vlmforge.core.chat_template: the same probe, giving {value!r} on the stand-in: {evidence})"
)
_QUESTIONS = {
    "image_in_message": "Image given inside the message (not a bare placeholder)",
    "image_before_text": "Image before text in the user turn",
    "continue_final_message": "continue_final_message renders an assistant prefill",
}
_CUSTOM_PROCESSOR_QUESTION = "Family needs a processor subclass"


def _text_item() -> dict[str, Any]:
    """A fresh probe text item: chat-template code may annotate the message dicts it is given."""
    return {"type": "text", "text": PROBE_TEXT}


@dataclass(frozen=True)
class _Probe:
    """The processor whose template is rendered, and how much its renderings say about the family's.

    Attributes:
        processor: the processor.
        provenance: where it came from, for the evidence.
        stored_template: its template is the family's real one (a checkpoint's, or a stored copy).
    """

    processor: Any
    provenance: str
    stored_template: bool

    @property
    def status(self) -> Status:
        """What a measurement on this template is worth."""
        return "measured" if self.stored_template else "unknown"

    @property
    def caveat(self) -> str:
        """Appended to measured evidence when the template is a stand-in."""
        if self.stored_template:
            return ""
        return (
            " (the tiny processor has no stored copy of this family's real template and uses a generic "
            "ChatML one, so this is NOT evidence about the real template: check with a checkpoint dir)"
        )

    def render(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        with quiet():
            return self.processor.apply_chat_template(messages, tokenize=False, **kwargs)

    def user_turn(self, content: list[dict[str, Any]]) -> str:
        """A one-message user turn, rendered up to the assistant's generation prompt."""
        return self.render([{"role": "user", "content": content}], add_generation_prompt=True)


def research_chat_template(
    processor: Any,
    provenance: str,
    stored_template: bool,
    model_class: type | None,
    image_token: str | None,
    report: ResearchReport,
) -> None:
    """image_in_message, image_before_text, continue_final_message: measured on the chat template.

    Without a processor or a template nothing can be measured; the family then needs a processor
    subclass (``custom_processor``) or a person to check.
    """
    if processor is None:
        for key, question in _QUESTIONS.items():
            report.add(Answer(key, question, None, f"unknown: {provenance}", "unknown", slot=key))
        report.add(
            Answer(
                "custom_processor",
                _CUSTOM_PROCESSOR_QUESTION,
                None,
                f"unknown: {provenance}",
                "unknown",
                slot="processor",
            )
        )
        return
    if not getattr(processor, "chat_template", None):
        reason = f"unknown: {provenance} has no chat template; prompts must be built by a processor subclass"
        for key, question in _QUESTIONS.items():
            report.add(Answer(key, question, None, reason, "unknown"))
        report.add(
            Answer(
                "custom_processor", _CUSTOM_PROCESSOR_QUESTION, True, reason, "hand_edit", slot="processor"
            )
        )
        return
    probe = _Probe(processor, provenance, stored_template)
    _research_image_position(probe, model_class, image_token, report)
    report.add(_prefill_answer(probe))


# -------------------------------------------------------------------------------------- image position
def _research_image_position(
    probe: _Probe, model_class: type | None, image_token: str | None, report: ResearchReport
) -> None:
    """image_in_message, then image_before_text with the image given the way the template reads it."""
    with quiet():
        measured = measure_image_in_message(probe.processor)
    report.add(_template_answer("image_in_message", measured, probe))
    if measured.value is None and "failed to render" in measured.evidence:
        reason = f"unknown: {probe.provenance}'s {measured.evidence}"
        report.add(Answer("image_before_text", _QUESTIONS["image_before_text"], None, reason, "unknown"))
        return
    image = Image.new("RGB", (32, 32))
    item = {"type": "image", "image": image} if measured.value else {"type": "image"}
    try:
        bare = probe.user_turn([_text_item()])
        rendered = [probe.user_turn(content) for content in ([item, _text_item()], [_text_item(), item])]
        positions = [_image_first(turn, bare) for turn in rendered]
    except Exception as error:
        report.add(
            Answer(
                "image_before_text",
                _QUESTIONS["image_before_text"],
                None,
                f"unknown: rendering failed ({error})",
                "unknown",
            )
        )
        return
    if all(turn == bare for turn in rendered):
        # Nothing marks the image in the text (the tiny factory writes nothing where the processor
        # rejects any placeholder): the processor puts the image in place itself, whatever the order.
        evidence = (
            f"the template renders nothing for an image item ({probe.provenance}): the processor places "
            "the image itself (it rejects a prompt that marks one), so the order in the turn is unused"
        )
        report.add(Answer("image_before_text", _QUESTIONS["image_before_text"], True, evidence))
        return
    report.add(_image_before_text_answer(probe, positions, _documented_order(model_class, image_token)))


def _image_first(rendered: str, bare: str) -> bool | None:
    """Whether the image marker comes before the probe text in ``rendered`` (None: the text is missing, or
    the template renders no marker for the image: the processor inserts the image itself, IDEFICS)."""
    at, marker = inserted(rendered, bare)
    if not marker:
        return None
    return at <= rendered.find(PROBE_TEXT) if PROBE_TEXT in rendered else None


def _template_answer(key: str, measured: Measured, probe: _Probe) -> Answer:
    """A template-dependent convention: measured on a real template, else left to the runtime (None)."""
    question = _QUESTIONS[key]
    if not probe.stored_template:
        evidence = _MEASURED_AT_LOAD.format(
            provenance=probe.provenance, value=measured.value, evidence=measured.evidence
        )
        return Answer(key, question, None, evidence, "default", slot=key)
    if measured.value is None:
        return Answer(
            key, question, None, f"unknown: {measured.evidence} ({probe.provenance})", "unknown", slot=key
        )
    return Answer(
        key, question, measured.value, f"{measured.evidence} ({probe.provenance})", "measured", slot=key
    )


def _image_before_text_answer(
    probe: _Probe, positions: list[bool | None], documented: tuple[bool, str] | None
) -> Answer:
    """A position the template fixes; else the documented convention; else image first by default."""
    question = _QUESTIONS["image_before_text"]
    if positions in ([True, True], [False, False]):
        where = "before" if positions[0] else "after"
        evidence = (
            f"the template puts the image {where} the text whatever the content order "
            f"({probe.provenance}){probe.caveat}"
        )
        return Answer(
            "image_before_text", question, positions[0], evidence, probe.status, slot="image_before_text"
        )
    # A template that renders no image marker leaves the image's place to the processor: no template order.
    order = (
        "the template renders no marker for the image (the processor inserts the image itself)"
        if positions == [None, None]
        else "the template follows the content order"
    )
    if documented is not None:
        before, evidence = documented
        evidence = f"{order}; {evidence}"
        return Answer("image_before_text", question, before, evidence, "found", slot="image_before_text")
    return Answer(
        "image_before_text",
        question,
        True,
        f"{order} and no usage example shows the convention; "
        "image first is the default (the order the seed families were trained with)",
        "default",
        slot="image_before_text",
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


# --------------------------------------------------------------------------------------------- prefill
def _prefill_answer(probe: _Probe) -> Answer:
    """continue_final_message: the rendered prompt must end with the prefill (nothing closes the turn)."""
    with quiet():
        measured = measure_continue_final_message(probe.processor)
    return _template_answer("continue_final_message", measured, probe)
