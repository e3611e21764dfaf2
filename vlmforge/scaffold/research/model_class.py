"""Which transformers class generates text for this config, and that class built on the meta device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from torch import nn
from transformers import PretrainedConfig
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.report import Answer, ResearchReport, ResolvedSource, Status
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["build_meta_model", "select_model_class"]


@dataclass(frozen=True)
class _ClassChoice:
    """The generation class picked for a config, and what in the config or transformers names it."""

    cls: type[nn.Module]
    name: str  # as the config or the mapping spells it
    evidence: str
    status: Status = "found"


def select_model_class(
    resolved: ResolvedSource, report: ResearchReport, trust_remote_code: bool
) -> type[nn.Module]:
    """Pick the generation class and refuse what is not an image+text decoder VLM."""
    config = resolved.config
    if config.is_encoder_decoder or getattr(config.get_text_config(), "is_encoder_decoder", False):
        raise ScaffoldError(
            f"{resolved.given!r} ({config.model_type}) is an encoder-decoder model: its text is produced "
            "by a decoder "
            "that cross-attends to a separate encoder, so there is no single decoder-only residual stream "
            "for vlmforge's hooks (resid_pre/post, attention patterns over the prompt). vlmforge supports "
            "image+text decoder VLMs (LLaVA, Qwen-VL, Idefics/SmolVLM style)."
        )
    choice = _transformers_class(config) or _remote_class(resolved, trust_remote_code)
    if choice is None:
        raise _not_a_vlm_error(resolved)
    report.add(Answer("model_class", "HF model class", choice.name, choice.evidence, choice.status))
    return choice.cls


def _transformers_class(config: PretrainedConfig) -> _ClassChoice | None:
    """The class ``config.architectures`` names, else transformers' image-text-to-text auto mapping's."""
    model_type = config.model_type
    mapping = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    architectures = [a for a in (config.architectures or []) if a]
    vlm_classes = set(mapping.values())
    for name in architectures:
        cls = getattr(transformers, name, None)
        if cls is not None and (name in vlm_classes or model_type in mapping):
            return _ClassChoice(cls, name, f"config.architectures = {architectures}")
    name = mapping.get(model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        return None
    evidence = f"transformers' image-text-to-text auto mapping: {model_type!r} -> {name}"
    if architectures:
        evidence += f" (config.architectures {architectures} is not a transformers class)"
    return _ClassChoice(cls, name, evidence)


def _remote_class(resolved: ResolvedSource, trust_remote_code: bool) -> _ClassChoice | None:
    """The checkpoint's own class from ``config.auto_map``, only when remote code is allowed."""
    auto_map = getattr(resolved.config, "auto_map", None) or {}
    remote = auto_map.get("AutoModelForImageTextToText") or auto_map.get("AutoModelForVision2Seq")
    if not (remote and trust_remote_code and resolved.files_dir is not None):
        return None
    cls = get_class_from_dynamic_module(remote, str(resolved.files_dir))
    return _ClassChoice(
        cls,
        cls.__name__,
        f"remote code {remote} (config.auto_map); the registry needs the class in transformers",
        "hand_edit",
    )


def _not_a_vlm_error(resolved: ResolvedSource) -> ScaffoldError:
    config = resolved.config
    has_vision = any(
        isinstance(getattr(config, key, None), PretrainedConfig) and "vision" in key
        for key in config.to_dict()
    )
    reason = (
        "it has a vision sub-config, but transformers maps its model_type to no image-text-to-text class"
        if has_vision
        else "its config has no vision tower and transformers maps it to no image-text-to-text class "
        "(a text-only language model)"
    )
    return ScaffoldError(
        f"{resolved.given!r} (model_type {config.model_type!r}, {type(config).__name__}) is not an "
        "image+text decoder "
        f"VLM: {reason}. vlmforge adds vision-language models whose decoder reads image tokens; for a "
        "text-only model use a text interpretability library instead, or point at the VLM checkpoint built "
        "on it."
    )


def build_meta_model(cls: type[nn.Module], config: PretrainedConfig) -> nn.Module:
    """Instantiate ``cls`` on the meta device: the full module tree with no storage behind any weight."""
    with quiet(), torch.device("meta"):
        try:
            return cls._from_config(config)
        except Exception as error:
            raise ScaffoldError(
                f"transformers {transformers.__version__} cannot build {cls.__name__} from this config "
                f"({type(error).__name__}: {error}). If this is transformers' default config for the "
                "model_type, pass a real checkpoint directory (or stored reference id) instead."
            ) from error
