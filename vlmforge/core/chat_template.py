"""Chat-template conventions measured by rendering probe messages with a processor.

Two facts of :class:`~vlmforge.core.spec.PromptFormat` are properties of the chat template a checkpoint
ships, not of the architecture: whether the image must travel inside the content item, and whether an
assistant prefill renders open-ended with ``continue_final_message=True``. A spec may leave them ``None``;
:class:`~vlmforge.core.processing.VLMProcessor` then measures them here on the template it was given. The
scaffolder's research uses the same probes, so what it reports is what the runtime will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

__all__ = [
    "PROBE_PREFILL",
    "PROBE_TEXT",
    "Measured",
    "inserted",
    "measure_continue_final_message",
    "measure_image_in_message",
    "render",
    "user_turn",
]

PROBE_TEXT = "Describe this picture in one sentence."
PROBE_PREFILL = "The picture shows"


@dataclass(frozen=True)
class Measured:
    """A convention measured on a chat template: ``value`` (``None``: the probes could not tell) and why."""

    value: bool | None
    evidence: str


def text_item() -> dict[str, Any]:
    """A fresh probe text item: chat-template code may annotate the message dicts it is given."""
    return {"type": "text", "text": PROBE_TEXT}


def render(processor: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """``apply_chat_template(messages, tokenize=False, **kwargs)``."""
    return processor.apply_chat_template(messages, tokenize=False, **kwargs)


def user_turn(processor: Any, content: list[dict[str, Any]]) -> str:
    """A one-message user turn, rendered up to the assistant's generation prompt."""
    return render(processor, [{"role": "user", "content": content}], add_generation_prompt=True)


def inserted(with_item: str, without: str) -> tuple[int, str]:
    """Where ``with_item`` differs from ``without``: (start index, inserted text)."""
    prefix = 0
    while prefix < min(len(with_item), len(without)) and with_item[prefix] == without[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(with_item), len(without)) - prefix and with_item[-1 - suffix] == without[-1 - suffix]
    ):
        suffix += 1
    return prefix, with_item[prefix : len(with_item) - suffix]


def measure_image_in_message(processor: Any) -> Measured:
    """False when a bare ``{"type": "image"}`` placeholder renders an image marker; True when only an item
    carrying the image does; ``None`` when neither renders one (or the template cannot render a turn).
    """
    image = Image.new("RGB", (32, 32))
    try:
        bare = user_turn(processor, [text_item()])
        placeholder = user_turn(processor, [{"type": "image"}, text_item()])
        in_message = user_turn(processor, [{"type": "image", "image": image}, text_item()])
    except Exception as error:  # any template failure means "cannot tell"
        return Measured(None, f"the chat template failed to render a user turn ({error})")
    _, marker = inserted(placeholder, bare)
    if marker:
        return Measured(False, f"the bare {{'type': 'image'}} placeholder renders {marker!r}")
    _, marker = inserted(in_message, bare)
    if marker:
        return Measured(
            True, f"the bare placeholder renders nothing; with the image inside it renders {marker!r}"
        )
    return Measured(None, "the template renders no image marker either way")


def measure_continue_final_message(processor: Any) -> Measured:
    """True when ``continue_final_message=True`` renders a prompt ending with the assistant prefill."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, text_item()]},
        {"role": "assistant", "content": [{"type": "text", "text": PROBE_PREFILL}]},
    ]
    try:
        rendered = render(processor, messages, continue_final_message=True)
    except Exception as error:  # transformers raises when it cannot find the final message to continue
        return Measured(False, f"apply_chat_template(continue_final_message=True) raised {error}")
    works = rendered.endswith(PROBE_PREFILL)
    return Measured(
        works, f"renders ...{rendered[-40:]!r}" + ("" if works else " (does not end with the prefill)")
    )
