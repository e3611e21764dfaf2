"""Resolve what the user typed (checkpoint dir, hub id, stored reference, model_type) to a config, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers
from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.report import ResolvedSource
from vlmforge.scaffold.research.isolation import offline, quiet
from vlmforge.tiny import load_reference_config, reference_checkpoints

__all__ = ["resolve_source"]


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
        return _resolve_directory(source, path, trust_remote_code)
    if path.exists():
        raise ScaffoldError(
            f"{source!r} is a file, not a checkpoint directory; point at the folder with config.json"
        )
    if "/" in source:
        return _resolve_hub_id(source, trust_remote_code)
    return _resolve_model_type(source)


def _resolve_directory(source: str, path: Path, trust_remote_code: bool) -> ResolvedSource:
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


def _is_hub_id(source: str) -> bool:
    """``org/name`` (exactly one slash, no path prefix) is a hub id; anything else with a slash is a path."""
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not source.endswith("/")


def _resolve_hub_id(source: str, trust_remote_code: bool) -> ResolvedSource:
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


def _resolve_model_type(source: str) -> ResolvedSource:
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
        cached = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # invalid repo id syntax and the like: "not cached"
        return None
    if not isinstance(cached, str) or not Path(cached).is_file():
        return None
    with offline(), quiet():
        config = _load_local_config(Path(cached).parent, trust_remote_code)
    return config, Path(cached).parent


def _load_local_config(directory: Path, trust_remote_code: bool) -> PretrainedConfig:
    """The directory's config; a failure becomes a ScaffoldError that names the fix."""
    try:
        return AutoConfig.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _config_error(directory, trust_remote_code, error) from error


def _config_error(directory: Path, trust_remote_code: bool, error: Exception) -> ScaffoldError:
    """Why ``directory``'s config.json did not load, told from the raw JSON."""
    raw = _config_json(directory)
    model_type = raw.get("model_type") if raw is not None else None
    if raw is not None and raw.get("auto_map") and not trust_remote_code:
        return ScaffoldError(
            f"{directory} needs custom code from the checkpoint (its config.json has an auto_map). "
            "vlmforge never runs remote code unless you pass --trust-remote-code; read that code first."
        )
    if raw is None or not model_type:
        return ScaffoldError(
            f"{directory / 'config.json'} is not a readable JSON config with a model_type; point at a "
            "Hugging Face checkpoint directory"
        )
    if model_type not in CONFIG_MAPPING:
        return ScaffoldError(
            f"{str(directory)!r} has model_type {model_type!r}, which the installed transformers "
            f"{transformers.__version__} does not know ({type(error).__name__}). Install a transformers "
            "release that has this architecture (check its model documentation for the first version), or "
            "pass --trust-remote-code if the checkpoint ships its own modelling code."
        )
    return ScaffoldError(
        f"transformers {transformers.__version__} cannot load {directory / 'config.json'} "
        f"({type(error).__name__}: {error}); check the file"
    )


def _config_json(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
