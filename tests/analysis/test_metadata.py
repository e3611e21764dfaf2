"""Input metadata: token labels and image-token positions for every family."""

from __future__ import annotations

import pytest
from analysis_helpers import check_declared_not_applicable, gradient_image

from vlmforge.analysis import UnsupportedGeometryError, VLMMetadataExtractor, extract_metadata


def test_extract_metadata_for_every_family(family, tiny) -> None:
    vlm = tiny(family)
    image = gradient_image(100, 60)
    inputs = vlm.prepare_messages("Where is the edge?", image)
    ids = inputs["input_ids"][0]
    try:
        metadata = extract_metadata(vlm, inputs, image)
    except UnsupportedGeometryError as error:
        pytest.skip(f"not applicable, declared: {check_declared_not_applicable(vlm, image, error)}")
    positions = vlm.adapter.image_token_mask(inputs)[0].nonzero().flatten().tolist()
    assert metadata["image_token_positions"] == positions
    assert metadata["num_image_tokens"] == len(positions) == metadata["total_patches"]
    labels = metadata["token_labels"]
    assert len(labels) == len(ids)
    assert [labels[p] for p in positions] == [f"<IMG{k:03d}>" for k in range(1, len(positions) + 1)]
    first_text = next(i for i in range(len(ids)) if i not in positions)
    assert labels[first_text] == vlm.prompt_processor.tokenizer.decode([int(ids[first_text])])
    grid_h, grid_w = metadata["grid_size"]
    assert grid_h * grid_w == metadata["total_patches"]
    assert metadata["image_size"] == (grid_w * metadata["patch_size"], grid_h * metadata["patch_size"])
    with pytest.raises(ValueError, match="batch"):
        extract_metadata(vlm, {"input_ids": inputs["input_ids"].repeat(2, 1)}, image, metadata["image_info"])
    other = vlm.prepare_messages("Where?", gradient_image(300, 40))
    if int(vlm.adapter.image_token_mask(other).sum()) != len(positions):
        with pytest.raises(ValueError, match="image tokens"):
            extract_metadata(vlm, other, image)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_extract_metadata_qwen_agrees_with_the_generic_path(family, tiny) -> None:
    vlm = tiny(family)
    image = gradient_image(100, 60)
    inputs = vlm.prepare_messages("Where is the edge?", image)
    qwen = VLMMetadataExtractor.extract_metadata_qwen(vlm.model, vlm.processor, inputs, image)
    generic = VLMMetadataExtractor.extract_metadata(vlm, inputs, image)
    generic.pop("image_info")
    assert qwen == generic


def test_extract_metadata_llava(tiny) -> None:
    vlm = tiny("llava")
    image = gradient_image(100, 60)
    inputs = vlm.prepare_messages("Where is the edge?", image)
    meta = VLMMetadataExtractor.extract_metadata_llava(vlm.model, vlm.processor, inputs, image, image_size=28)
    assert meta["grid_size"] == 2 and meta["total_patches"] == 4 == meta["num_image_tokens"]
    assert meta["image_size"] == 28 and meta["patch_size"] == 14
    default = VLMMetadataExtractor.extract_metadata_llava(vlm.model, vlm.processor, inputs, image)
    assert default["grid_size"] == 24 and default["total_patches"] == 576
