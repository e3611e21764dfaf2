"""Resolve what the user typed to a config offline, pick the model class, build it on the meta device."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.report import Answer, ResearchReport, ResolvedSource
from vlmforge.tiny import load_reference_config, reference_checkpoints

__all__ = ["build_meta_model", "offline", "quiet", "resolve_source", "select_model_class"]


# ------------------------------------------------------------------------------------------- resolution
@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Force transformers / huggingface_hub offline for the block (belt and braces with local_files_only)."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Silence transformers' and Python's warnings while probing (they are not the user's problem)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    stack.callback(transformers.logging.set_verbosity, verbosity)
    return stack


def _is_hub_id(source: str) -> bool:
    """``org/name`` (exactly one slash, no path prefix) is a hub id; anything else with a slash is a path."""
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not source.endswith("/")


def _load_local_config(directory: Path, trust_remote_code: bool) -> PretrainedConfig:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return AutoConfig.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raw = _config_json(directory)
        model_type = raw.get("model_type") if raw is not None else None
        if raw is not None and raw.get("auto_map") and not trust_remote_code:
            raise ScaffoldError(
                f"{directory} needs custom code from the checkpoint (its config.json has an auto_map). "
                "vlmforge never runs remote code unless you pass --trust-remote-code; read that code first."
            ) from error
        if raw is None or not model_type:
            raise ScaffoldError(
                f"{directory / 'config.json'} is not a readable JSON config with a model_type; point at a "
                "Hugging Face checkpoint directory"
            ) from error
        if model_type not in CONFIG_MAPPING:
            raise _unknown_model_type_error(str(directory), model_type, error) from error
        raise ScaffoldError(
            f"transformers {transformers.__version__} cannot load {directory / 'config.json'} "
            f"({type(error).__name__}: {error}); check the file"
        ) from error


def _config_json(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unknown_model_type_error(source: str, model_type: str | None, error: Exception) -> ScaffoldError:
    return ScaffoldError(
        f"{source!r} has model_type {model_type!r}, which the installed transformers "
        f"{transformers.__version__} does not know ({type(error).__name__}). Install a transformers release "
        "that "
        "has this architecture (check its model documentation for the first version), or pass "
        "--trust-remote-code if the checkpoint ships its own modelling code."
    )


def resolve_source(source: str, *, trust_remote_code: bool = False) -> ResolvedSource:
    """Resolve a hub id / local dir / stored reference id / model_type to a config, offline.

    Order: an existing directory; an ``org/name`` id (local HF cache first, then the stored reference
    configs of :mod:`vlmforge.tiny`); otherwise a bare ``model_type``.

    Raises:
        ScaffoldError: not found offline, not a directory with a config.json, or an unknown model_type.
    """
    source = source.strip()
    if not source:
        raise ScaffoldError("give a hub id, a local checkpoint directory or a model_type to scaffold")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ScaffoldError(
                f"{source!r} is a directory without a config.json. Point at a checkpoint directory (the "
                "folder with config.json and, ideally, the tokenizer / processor files)."
            )
        with offline(), quiet():
            config = _load_local_config(path, trust_remote_code)
        return ResolvedSource(
            source, "local_dir", config, None, path.resolve(), f"local checkpoint directory {path.resolve()}"
        )
    if path.exists():
        raise ScaffoldError(
            f"{source!r} is a file, not a checkpoint directory; point at the folder with config.json"
        )
    if "/" in source:
        if not _is_hub_id(source):
            raise ScaffoldError(
                f"{source!r} looks like a path, but no such directory exists; point at a checkpoint directory"
            )
        cached = _cached_hub_config(source, trust_remote_code)
        if cached is not None:
            config, files_dir = cached
            return ResolvedSource(
                source, "hub_cache", config, source, files_dir, f"hub id {source} from the local HF cache"
            )
        if source in reference_checkpoints():
            return ResolvedSource(
                source,
                "reference",
                load_reference_config(source),
                source,
                None,
                f"stored reference config of {source} (vlmforge.tiny)",
            )
        raise ScaffoldError(
            f"{source!r} is not in the local Hugging Face cache and vlmforge works offline, so it cannot be "
            "downloaded. Download the checkpoint elsewhere (at least config.json plus the tokenizer / "
            "processor files) and pass its local directory instead, e.g. "
            f"`scaffold-new-model /path/to/{source.split('/')[-1]}`, or pass the architecture's model_type. "
            f"Stored reference configs: {', '.join(reference_checkpoints())}."
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if source not in CONFIG_MAPPING:
        near = [t for t in CONFIG_MAPPING if source.replace("-", "_") == t.replace("-", "_")]
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ScaffoldError(
            f"{source!r} is neither an existing directory, an org/name hub id, nor a model_type known to the "
            f"installed transformers {transformers.__version__}.{hint} If it is a new architecture, "
            "install a "
            "transformers release that has it; if it is a checkpoint, pass its local directory."
        )
    with quiet():
        try:
            config = AutoConfig.for_model(source)
        except Exception as error:  # a broken default config is transformers' problem; report it plainly
            raise ScaffoldError(
                f"transformers {transformers.__version__} cannot build a default config for model_type "
                f"{source!r} ({type(error).__name__}: {error}). Pass a checkpoint directory instead."
            ) from error
    return ResolvedSource(
        source, "model_type", config, None, None, f"transformers' default config for `{source}`"
    )


def _cached_hub_config(hub_id: str, trust_remote_code: bool) -> tuple[PretrainedConfig, Path] | None:
    """The config of ``hub_id`` if its config.json is in the local HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        cached = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # invalid repo id syntax and the like: "not cached"
        return None
    if not isinstance(cached, str) or not Path(cached).is_file():
        return None
    with offline(), quiet():
        config = _load_local_config(Path(cached).parent, trust_remote_code)
    return config, Path(cached).parent


# ------------------------------------------------------------------------------------ model class + meta
def _image_text_classes() -> dict[str, str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return dict(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def select_model_class(
    resolved: ResolvedSource, report: ResearchReport, trust_remote_code: bool
) -> type[nn.Module]:
    """Pick the generation class and refuse what is not an image+text decoder VLM."""
    config = resolved.config
    model_type = config.model_type
    mapping = _image_text_classes()
    if config.is_encoder_decoder or getattr(config.get_text_config(), "is_encoder_decoder", False):
        raise ScaffoldError(
            f"{resolved.given!r} ({model_type}) is an encoder-decoder model: its text is produced by a "
            "decoder "
            "that cross-attends to a separate encoder, so there is no single decoder-only residual stream "
            "for vlmforge's hooks (resid_pre/post, attention patterns over the prompt). vlmforge supports "
            "image+text decoder VLMs (LLaVA, Qwen-VL, Idefics/SmolVLM style)."
        )
    architectures = [a for a in (config.architectures or []) if a]
    vlm_classes = set(mapping.values())
    for name in architectures:
        cls = getattr(transformers, name, None)
        if cls is not None and (name in vlm_classes or model_type in mapping):
            report.add(
                Answer("model_class", "HF model class", name, f"config.architectures = {architectures}")
            )
            return cls
    if model_type in mapping:
        name = mapping[model_type]
        cls = getattr(transformers, name, None)
        if cls is not None:
            evidence = f"transformers' image-text-to-text auto mapping: {model_type!r} -> {name}"
            if architectures:
                evidence += f" (config.architectures {architectures} is not a transformers class)"
            report.add(Answer("model_class", "HF model class", name, evidence))
            return cls
    auto_map = getattr(config, "auto_map", None) or {}
    remote = auto_map.get("AutoModelForImageTextToText") or auto_map.get("AutoModelForVision2Seq")
    if remote and trust_remote_code and resolved.files_dir is not None:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        cls = get_class_from_dynamic_module(remote, str(resolved.files_dir))
        report.add(
            Answer(
                "model_class",
                "HF model class",
                cls.__name__,
                f"remote code {remote} (config.auto_map); the registry needs the class in transformers",
                "hand_edit",
            )
        )
        return cls
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
    raise ScaffoldError(
        f"{resolved.given!r} (model_type {model_type!r}, {type(config).__name__}) is not an image+text "
        "decoder "
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
