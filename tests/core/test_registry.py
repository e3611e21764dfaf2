"""Registry: registration, listing, resolution and the errors a user sees."""

from __future__ import annotations

import json
import sys

import pytest

from vlmforge.core import (
    AdapterDiscoveryError,
    FamilySpec,
    ModelAdapter,
    ModelRegistry,
    UnknownModelError,
    UnsupportedArchitectureError,
)

SEED_FAMILIES = {"llava", "smolvlm", "qwen2_5_vl", "qwen3_vl"}


def test_seed_families_are_registered():
    assert set(ModelRegistry.adapters()) >= SEED_FAMILIES


@pytest.mark.parametrize(
    "checkpoint",
    [
        "llava-hf/llava-1.5-7b-hf",
        "llava-hf/llava-1.5-13b-hf",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        "HuggingFaceTB/SmolVLM-Instruct",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-72B-Instruct",
        "ByteDance-Seed/UI-TARS-1.5-7B",
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
    ],
)
def test_supported_checkpoints_resolve(checkpoint):
    assert checkpoint in ModelRegistry.list_supported_models()
    resolution = ModelRegistry.resolve(checkpoint)
    assert resolution.source == "checkpoint" and resolution.location == checkpoint


def test_alias_and_tiny_resolution():
    assert ModelRegistry.resolve("qwen3-vl-4b").location == "Qwen/Qwen3-VL-4B-Instruct"
    tiny = ModelRegistry.resolve("tiny/smolvlm")
    assert tiny.source == "tiny" and tiny.family == "smolvlm" and tiny.display_name == "tiny/smolvlm"
    assert ModelRegistry.resolve("tiny/llava-7b").family == "llava"  # tiny/<alias> works too
    assert ModelRegistry.get_adapter_class("ui-tars-1.5-7b").spec.name == "qwen2_5_vl"


def test_unknown_name_lists_what_is_known():
    with pytest.raises(UnknownModelError) as error:
        ModelRegistry.resolve("not-a-model")
    message = str(error.value)
    assert "llava-7b" in message and "tiny/qwen3_vl" in message and "Qwen/Qwen2.5-VL-7B-Instruct" in message


def test_local_directory_resolves_by_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "architectures": []}))
    resolution = ModelRegistry.resolve(str(tmp_path))
    assert resolution.family == "qwen2_5_vl" and resolution.source == "local"


def test_local_fine_tune_resolves_by_architecture(tmp_path):
    config = {"model_type": "my_llava_finetune", "architectures": ["LlavaForConditionalGeneration"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert ModelRegistry.resolve(str(tmp_path)).family == "llava"


def test_unsupported_architecture_points_to_scaffolder(tmp_path):
    # vipllava: a VLM transformers knows that no family here handles (the README's scaffolding demo).
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipllava", "architectures": ["X"]}))
    with pytest.raises(UnsupportedArchitectureError, match=r"'vipllava'.*scaffold-new-model"):
        ModelRegistry.resolve(str(tmp_path))


def test_path_without_config_is_explained(tmp_path):
    with pytest.raises(UnknownModelError, match=r"no config\.json"):
        ModelRegistry.resolve(str(tmp_path))


def test_broken_adapter_module_is_reported_not_swallowed(tmp_path, monkeypatch):
    (tmp_path / "broken_family.py").write_text("import this_module_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AdapterDiscoveryError, match=r"'broken_family'.*this_module_does_not_exist"):
        ModelRegistry.import_adapter_module("broken_family")
    sys.modules.pop("broken_family", None)


def test_missing_transformers_class_is_visible_in_listing():
    ghost_spec = FamilySpec(
        name="ghost",
        checkpoints=("org/ghost",),
        model_types=("ghost",),
        model_class="GhostForConditionalGeneration",
        language_model="model.language_model",
    )

    @ModelRegistry.register("ghost")
    class GhostAdapter(ModelAdapter):
        spec = ghost_spec

    try:
        row = next(r for r in ModelRegistry.listing() if r["family"] == "ghost")
        assert row["available"] is False and "GhostForConditionalGeneration" in row["why_unavailable"]
        assert "org/ghost" not in ModelRegistry.list_supported_models()
        with pytest.raises(UnsupportedArchitectureError, match="lacks"):
            ModelRegistry.resolve("org/ghost")
    finally:
        ModelRegistry.unregister("ghost")


def test_register_rejects_name_mismatch_and_missing_spec():
    with pytest.raises(TypeError, match="spec"):
        ModelRegistry.register("x")(type("NoSpec", (ModelAdapter,), {}))
    adapter = ModelRegistry.adapters()["llava"]
    with pytest.raises(ValueError, match="named 'llava'"):
        ModelRegistry.register("other")(adapter)


def test_spec_validation():
    with pytest.raises(ValueError, match="identifier"):
        FamilySpec(
            name="bad-name", checkpoints=("a/b",), model_types=("x",), model_class="X", language_model="m"
        )
    with pytest.raises(ValueError, match="undeclared checkpoints"):
        FamilySpec(
            name="ok",
            checkpoints=("a/b",),
            aliases={"x": "c/d"},
            model_types=("x",),
            model_class="X",
            language_model="m",
        )


def test_supported_models_class_attribute_matches_spec():
    adapter = ModelRegistry.adapters()["qwen3_vl"]
    assert list(adapter.spec.checkpoints) == adapter.SUPPORTED_MODELS
