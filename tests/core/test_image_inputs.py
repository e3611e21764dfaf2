"""The runtime's "image tokens without pixels" guard knows pixels by any floating input tensor."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import tiny_vlm
from vlmforge.core.errors import InputError


def test_pixels_under_another_name_are_pixels() -> None:
    # FuyuProcessor's legacy output names its patches `image_patches` (the model's deprecated, still
    # accepted name); vlmforge asks for `pixel_values`, but inputs built elsewhere may carry the old name.
    vlm = tiny_vlm("fuyu")
    inputs = dict(vlm.prepare_messages("Describe.", Image.new("RGB", (32, 32), (90, 20, 200))))
    inputs["image_patches"] = inputs.pop("pixel_values")
    assert inputs["image_patches"].is_floating_point()
    assert vlm.forward(inputs).logits.shape[:2] == inputs["input_ids"].shape
    without = {key: value for key, value in inputs.items() if key != "image_patches"}
    with pytest.raises(InputError, match="no pixel_values"):
        vlm.forward(without)
