"""Real checkpoint configs stored as data (``reference_configs/<org>__<name>.json``), loadable offline."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

__all__ = ["UnknownCheckpointError", "load_reference_config", "reference_checkpoints", "reference_entry"]

_DATA = resources.files(__package__) / "reference_configs"


class UnknownCheckpointError(KeyError):
    """A checkpoint id with no stored reference config (lists the stored ones)."""

    def __str__(self) -> str:  # KeyError would repr() the message and hide the newlines
        return str(self.args[0])


def _file_name(checkpoint_id: str) -> str:
    return checkpoint_id.replace("/", "__") + ".json"


def reference_checkpoints() -> list[str]:
    """Checkpoint ids (``org/name``) whose real config is stored."""
    return sorted(
        p.name.removesuffix(".json").replace("__", "/", 1)
        for p in _DATA.iterdir()
        if p.name.endswith(".json")
    )


@cache
def _read(checkpoint_id: str) -> str:
    path = _DATA / _file_name(checkpoint_id)
    if not path.is_file():
        stored = "\n  ".join(reference_checkpoints())
        raise UnknownCheckpointError(f"no stored reference config for {checkpoint_id!r}; stored:\n  {stored}")
    return path.read_text()


def reference_entry(checkpoint_id: str) -> dict[str, Any]:
    """The stored entry: ``{"checkpoint", "notes", "config"}`` where ``config`` is the config.json subset."""
    return json.loads(_read(checkpoint_id))


def load_reference_config(checkpoint_id: str) -> PretrainedConfig:
    """Build the real config of ``checkpoint_id`` from stored facts, exactly as ``from_pretrained`` would.

    Raises:
        UnknownCheckpointError: (a ``KeyError``) no stored config for that id; the message lists stored ids.
    """
    data = reference_entry(checkpoint_id)["config"]
    config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
    config.name_or_path = checkpoint_id
    return config
