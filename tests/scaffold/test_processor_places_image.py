"""A processor that places the image itself: the template's image/text order is not a question then."""

from __future__ import annotations


def test_image_order_is_unused_when_the_template_renders_no_image(researched) -> None:
    # FuyuProcessor puts the image in front of the prompt itself and rejects a prompt marking one: the
    # tiny factory's template writes nothing for the image item, so no order can be (or needs to be) read.
    answer = researched("fuyu", False)["image_before_text"]
    assert answer.status == "found" and answer.value is True, answer
    assert "renders nothing for an image item" in answer.evidence


def test_a_template_that_renders_the_image_is_still_measured(researched) -> None:
    answer = researched("llava", False)["image_before_text"]
    assert "renders nothing" not in answer.evidence, answer
