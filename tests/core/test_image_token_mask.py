"""``ModelAdapter.image_token_mask``: the one place image positions are located, by token id or by a
declared processor mask (``image_token.position_mask``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import tiny_vlm
from vlmforge.analysis.metadata import token_labels
from vlmforge.core.errors import ContractError
from vlmforge.harness.probes import single_probe


def _mask_adapter(vlm, **source):
    """The family's adapter class with its image token source replaced."""
    cls = type(vlm.adapter)
    image_token = dataclasses.replace(cls.spec.image_token, **source)
    return type("MaskAdapter", (cls,), {"spec": cls.spec.replace(image_token=image_token)})(vlm.model)


def test_by_token_id_it_is_the_image_token_positions() -> None:
    vlm = tiny_vlm("llava")
    inputs = single_probe(vlm)
    mask = vlm.adapter.image_token_mask(inputs)
    assert torch.equal(mask, inputs["input_ids"] == vlm.adapter.get_image_token_id())
    assert mask.any()
    # Bare input_ids work too when positions come from the token id.
    assert torch.equal(vlm.adapter.image_token_mask(inputs["input_ids"]), mask)


def test_a_declared_processor_mask_is_read_from_the_inputs() -> None:
    vlm = tiny_vlm("llava")
    inputs = dict(single_probe(vlm))
    positions = torch.zeros_like(inputs["input_ids"])
    positions[0, 2:5] = 1
    inputs["positions_mask"] = positions
    adapter = _mask_adapter(vlm, config_attribute=None, token=None, position_mask="positions_mask")
    assert adapter.image_token_mask(inputs).nonzero()[:, 1].tolist() == [2, 3, 4]
    with pytest.raises(ContractError, match=r"no single image token id.*positions_mask"):
        adapter.get_image_token_id()
    with pytest.raises(ContractError, match="lack"):
        adapter.image_token_mask(inputs["input_ids"])
    inputs["positions_mask"] = positions[:, :-1]
    with pytest.raises(ContractError, match="shape"):
        adapter.image_token_mask(inputs)


def test_token_labels_take_a_position_mask() -> None:
    class Tokenizer:
        def decode(self, ids):
            return f"t{ids[0]}"

    ids = torch.tensor([[7, 8, 9, 10]])
    labels, positions = token_labels(Tokenizer(), ids, torch.tensor([[False, True, True, False]]))
    assert (labels, positions) == (["t7", "<IMG001>", "<IMG002>", "t10"], [1, 2])
    assert token_labels(Tokenizer(), ids, 9) == (["t7", "t8", "<IMG001>", "t10"], [2])
