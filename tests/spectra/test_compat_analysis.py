"""VLM Spectra §6 compatibility: preprocessing, analysis and visualization under VLM Spectra's names."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from vlmforge.core import ModelRegistry, VLMProcessor


def test_exports() -> None:
    from vlmforge.spectra import analysis, preprocessing, visualization

    for name in (
        "BaseProcessor",
        "QwenProcessor",
        "SmolVLMProcessor",
        "ImageInfo",
        "CorrectedBbox",
        "CorrectedSeg",
        "PatchOverlap",
        "process_vision_info",
        "smart_resize",
        "resolve_patch_params",
    ):
        assert hasattr(preprocessing, name), name
    assert callable(analysis.compute_logit_lens) and hasattr(
        analysis.VLMMetadataExtractor, "extract_metadata_qwen"
    )
    assert callable(visualization.create_logit_lens) and callable(visualization.generate_patch_overview)


def _parameters(function) -> list[tuple[str, object]]:
    """The parameters a VLM Spectra caller can pass positionally or by name.

    vlmforge may extend a function with keyword-only parameters that have defaults (``logit_mask`` of the
    logit lens): no VLM Spectra call can reach or miss them, so they are not part of the compared signature.
    """
    parameters = inspect.signature(function).parameters.values()
    extensions = [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert all(p.default is not inspect.Parameter.empty for p in extensions), extensions
    return [(p.name, p.default) for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]


def test_signatures_follow_the_spec() -> None:
    from vlmforge.spectra.analysis import VLMMetadataExtractor, compute_logit_lens
    from vlmforge.spectra.preprocessing import ImageInfo, process_vision_info, smart_resize
    from vlmforge.spectra.visualization import create_logit_lens, generate_patch_overview

    empty = inspect.Parameter.empty
    assert _parameters(smart_resize) == [
        ("height", empty),
        ("width", empty),
        ("factor", 28),
        ("min_pixels", 4 * 28 * 28),
        ("max_pixels", 16384 * 28 * 28),
    ]
    assert _parameters(process_vision_info) == [
        ("conversations", empty),
        ("return_video_kwargs", False),
        ("image_factor", None),
    ]
    assert _parameters(compute_logit_lens) == [
        ("hidden_states", empty),
        ("norm", empty),
        ("lm_head", empty),
        ("tokenizer", empty),
        ("top_k", 5),
    ]
    assert [name for name, _ in _parameters(create_logit_lens)] == [
        *("hidden_states", "norm", "lm_head", "tokenizer", "image", "token_labels", "image_size"),
        *("grid_size", "patch_size", "model_name", "image_filename", "prompt", "save_folder", "misc_text"),
    ]
    assert _parameters(create_logit_lens)[-2:] == [("save_folder", "."), ("misc_text", "")]
    assert _parameters(generate_patch_overview) == [
        ("info", empty),
        ("labels", "every_10"),
        ("start_number", 0),
        ("highlight", None),
        ("highlight_color", (255, 200, 0, 100)),
    ]
    assert _parameters(VLMMetadataExtractor.extract_metadata_llava)[-2:] == [
        ("image_size", 336),
        ("patch_size", 14),
    ]
    assert [f.name for f in fields(ImageInfo)][:8] == [
        *("image", "original_size", "processed_size", "crop_box", "patch_size", "spatial_merge_size"),
        *("grid_h", "grid_w"),
    ]


def test_image_info_spec_behaviour() -> None:
    from vlmforge.spectra.preprocessing import CorrectedBbox, ImageInfo, PatchOverlap
    from vlmforge.spectra.visualization import generate_patch_overview

    # Qwen-style: no crop, 112x84 processed from 224x168, patch 14, merge 2 -> 3x4 grid of 28 px.
    info = ImageInfo(
        Image.new("RGB", (112, 84), "white"), (224, 168), (112, 84), (0, 0, 224, 168), 14, 2, 3, 4
    )
    assert info.effective_patch_size == 28 and info.num_patches == 12
    assert info.correct_bbox((0, 0, 56, 56)) == CorrectedBbox((0.0, 0.0, 28.0, 28.0), False)
    assert info.correct_bbox((200, 150, 300, 300)).clipped
    overlap = info.calc_overlay(bbox=(28, 28, 84, 84))  # half a cell each way, centred on cell 0's corner
    assert isinstance(overlap, PatchOverlap)
    assert overlap.patch_indices == [0, 1, 4, 5] and overlap.overlap_fractions == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError):
        info.calc_overlay()
    a = np.asarray(generate_patch_overview(info, labels="all", highlight=[3]))
    b = np.asarray(info.patch_overview(labels="all", highlight=[3]))
    assert (a == b).all()


@pytest.mark.parametrize(
    ("family", "wrapper"),
    [
        ("qwen2_5_vl", "QwenProcessor"),
        ("qwen3_vl", "QwenProcessor"),
        ("smolvlm", "SmolVLMProcessor"),
        ("llava", "BaseProcessor"),
    ],
)
def test_processor_wrappers_build_the_family_prompt(family: str, wrapper: str, tiny) -> None:
    from vlmforge.spectra import preprocessing

    vlm = tiny(family)
    processor = getattr(preprocessing, wrapper)(vlm.processor)
    assert isinstance(processor, VLMProcessor)
    assert processor.spec is ModelRegistry.adapters()[family].spec  # found from the processor class
    image = Image.new("RGB", (64, 48), "red")
    ours = processor.prepare_inputs("Color?", image)["input_ids"]
    assert torch.equal(ours, vlm.prepare_messages("Color?", image)["input_ids"])


def test_processor_wrapper_refuses_an_unknown_processor() -> None:
    from vlmforge.spectra.preprocessing import BaseProcessor

    class NotAProcessor:
        pass

    with pytest.raises(ValueError, match="no registered family"):
        BaseProcessor(NotAProcessor())


def test_logit_lens_and_metadata_spec_shapes(tiny, tmp_path) -> None:
    from vlmforge.spectra.analysis import VLMMetadataExtractor, compute_logit_lens
    from vlmforge.spectra.visualization import create_logit_lens

    vlm = tiny("qwen2_5_vl")
    image = Image.new("RGB", (64, 48), "red")
    inputs = vlm.prepare_messages("Color?", image)
    hidden = vlm.forward(inputs, output_hidden_states=True).hidden_states
    norm, head, tokenizer = (
        vlm.adapter.get_lm_norm(),
        vlm.adapter.get_lm_head(),
        vlm.prompt_processor.tokenizer,
    )
    lens = compute_logit_lens(hidden, norm, head, tokenizer)
    assert len(lens) == len(hidden) and len(lens[0]) == inputs["input_ids"].shape[1]
    assert all(isinstance(t, str) and re.fullmatch(r"[01]\.\d{4}", p) for t, p in lens[-1][-1])
    assert len(lens[-1][-1]) == 5
    meta = VLMMetadataExtractor.extract_metadata_qwen(vlm.model, vlm.processor, inputs, image)
    assert set(meta) == {
        *("token_labels", "image_token_positions", "num_image_tokens", "image_size"),
        *("grid_size", "patch_size", "total_patches"),
    }
    assert meta["token_labels"][meta["image_token_positions"][0]] == "<IMG001>"
    create_logit_lens(
        hidden,
        norm,
        head,
        tokenizer,
        image,
        meta["token_labels"],
        meta["image_size"],
        meta["grid_size"],
        meta["patch_size"],
        "qwen",
        "red.png",
        "Color?",
        save_folder=str(tmp_path),
    )
    assert (tmp_path / "qwen_red_logit_lens.html").is_file()
