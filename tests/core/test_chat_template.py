"""Template conventions a spec leaves None are measured on the loaded processor's chat template."""

from __future__ import annotations

import pytest
from PIL import Image

from vlmforge.core.chat_template import measure_continue_final_message, measure_image_in_message
from vlmforge.core.processing import VLMProcessor
from vlmforge.core.registry import ModelRegistry
from vlmforge.tiny import build_tiny_processor

# A template that renders an image marker only for an item carrying the image, one that renders it for a
# bare placeholder, and one that rewrites assistant text (so a prefill cannot be continued verbatim).
IMAGE_ONLY_IN_ITEM = (
    "{% for m in messages %}<|{{ m.role }}|>{% for c in m.content %}"
    "{% if c.type == 'image' and c.image is defined %}<image>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
BARE_PLACEHOLDER = IMAGE_ONLY_IN_ITEM.replace("c.type == 'image' and c.image is defined", "c.type == 'image'")
REWRITES_ASSISTANT = BARE_PLACEHOLDER.replace(
    "{{ c.text }}", "{{ c.text if m.role == 'user' else c.text | upper }}"
)


@pytest.fixture
def processor():
    return build_tiny_processor("llava")


@pytest.mark.parametrize(
    ("template", "in_message", "continues"),
    [(IMAGE_ONLY_IN_ITEM, True, True), (BARE_PLACEHOLDER, False, True), (REWRITES_ASSISTANT, False, False)],
)
def test_measured_on_the_template(processor, template: str, in_message: bool, continues: bool) -> None:
    processor.chat_template = template
    assert measure_image_in_message(processor).value is in_message
    assert measure_continue_final_message(processor).value is continues


def test_open_ended_template_continues(processor) -> None:
    # The stored llava template renders an assistant prefill open-ended.
    assert measure_continue_final_message(processor).value is True
    assert measure_image_in_message(processor).value is False


def test_processor_uses_the_measured_conventions(processor) -> None:
    spec = ModelRegistry.adapters()["llava"].spec
    undecided = spec.replace(prompt=type(spec.prompt)(image_in_message=None, continue_final_message=None))
    processor.chat_template = IMAGE_ONLY_IN_ITEM.replace(
        "{{ c.text }}", "{{ c.text if m.role == 'user' else c.text | upper }}"
    )
    vlm_processor = VLMProcessor(processor, undecided)
    assert vlm_processor.prompt_format.image_in_message is True
    assert vlm_processor.prompt_format.continue_final_message is False
    text = vlm_processor.render("What is it?", Image.new("RGB", (8, 8)), assistant_prefill="It is")
    # The image travelled inside the item (the marker is rendered) and the prefill was appended.
    assert "<image>" in text and text.endswith("<|assistant|>It is")
    # A declared value wins over the measurement.
    declared = VLMProcessor(processor, spec)
    assert declared.prompt_format.image_in_message is False
    assert "<image>" not in declared.render("What is it?", Image.new("RGB", (8, 8)))
