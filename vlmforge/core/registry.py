"""The model registry: family adapters, their checkpoints and aliases, and name resolution.

Families register with ``@ModelRegistry.register("name")``. Discovery imports every module of
``vlmforge.adapters`` plus any module advertised under the ``vlmforge.adapters`` entry-point group
(a project of its own adapters). A module that fails to import is a bug and raises
:class:`AdapterDiscoveryError` naming it; the only silent case is a family whose transformers class
is missing from the installed transformers, and even that shows in :meth:`ModelRegistry.listing`. A family
whose class the installed release has but cannot run (:data:`vlmforge.core.versions.BROKEN_FORWARDS`) is
unavailable the same way, and loading it raises :class:`UnsupportedReleaseError` naming the defect.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Literal

import transformers

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.errors import (
    AdapterDiscoveryError,
    CheckpointLoadError,
    UnknownModelError,
    UnsupportedArchitectureError,
    UnsupportedReleaseError,
)
from vlmforge.core.versions import TRANSFORMERS_VERSION, broken_forward

TINY_PREFIX = "tiny/"
ADAPTER_ENTRY_POINT_GROUP = "vlmforge.adapters"


@dataclass(frozen=True)
class Resolution:
    """What a user-typed model name refers to.

    Attributes:
        adapter_class: the family's adapter.
        source: ``"tiny"`` (random tiny model), ``"checkpoint"`` (hub id) or ``"local"`` (directory).
        location: the checkpoint id or directory to load (for tiny: the reference checkpoint).
        requested: the name as typed.
    """

    adapter_class: type[ModelAdapter]
    source: Literal["tiny", "checkpoint", "local"]
    location: str
    requested: str

    @property
    def family(self) -> str:
        return self.adapter_class.spec.name

    @property
    def display_name(self) -> str:
        return f"{TINY_PREFIX}{self.family}" if self.source == "tiny" else self.location


class ModelRegistry:
    """Class-level registry of family adapters (VLM Spectra's ``ModelRegistry`` surface)."""

    _adapters: ClassVar[dict[str, type[ModelAdapter]]] = {}
    _discovered: ClassVar[bool] = False

    # ------------------------------------------------------------ registration
    @classmethod
    def register(cls, name: str):
        """Class decorator registering a :class:`ModelAdapter` subclass under ``name``."""

        def decorator(adapter_class: type[ModelAdapter]) -> type[ModelAdapter]:
            spec = getattr(adapter_class, "spec", None)
            if spec is None:
                raise TypeError(f"{adapter_class.__name__} has no `spec`; set spec = FamilySpec(...)")
            if spec.name != name:
                raise ValueError(f"@register({name!r}) on a class whose spec is named {spec.name!r}")
            existing = cls._adapters.get(name)
            if existing is not None and existing.__qualname__ != adapter_class.__qualname__:
                raise ValueError(f"family {name!r} is registered twice ({existing} and {adapter_class})")
            # VLM Spectra exposes the checkpoints as a class attribute; keep that surface.
            adapter_class.SUPPORTED_MODELS = list(spec.checkpoints)
            cls._adapters[name] = adapter_class
            return adapter_class

        return decorator

    @classmethod
    def unregister(cls, name: str) -> None:
        cls._adapters.pop(name, None)

    @classmethod
    @contextlib.contextmanager
    def isolated(cls) -> Iterator[dict[str, type[ModelAdapter]]]:
        """A scratch registry for the block: registrations inside it vanish afterwards.

        Used to import a candidate family module (e.g. a freshly scaffolded one) without replacing
        an installed family of the same name or leaving a throwaway class registered.
        """
        saved, discovered = cls._adapters, cls._discovered
        cls._adapters, cls._discovered = {}, True
        try:
            yield cls._adapters
        finally:
            cls._adapters, cls._discovered = saved, discovered

    # --------------------------------------------------------------- discovery
    @classmethod
    def discover(cls) -> None:
        """Import all adapter modules once. Import failures raise, naming the module."""
        if cls._discovered:
            return
        cls._discovered = True
        package = importlib.import_module("vlmforge.adapters")
        modules = [f"vlmforge.adapters.{info.name}" for info in pkgutil.iter_modules(package.__path__)]
        modules += [ep.value for ep in entry_points(group=ADAPTER_ENTRY_POINT_GROUP)]
        for module_name in modules:
            cls.import_adapter_module(module_name)

    @staticmethod
    def import_adapter_module(module_name: str) -> ModuleType:
        """Import an adapter module by dotted name; failures raise :class:`AdapterDiscoveryError`."""
        try:
            return importlib.import_module(module_name)
        except Exception as error:  # any failure is a broken adapter, and must be reported
            cls_name = type(error).__name__
            raise AdapterDiscoveryError(
                f"adapter module {module_name!r} failed to import ({cls_name}: {error}). "
                "Fix or remove that module; vlmforge does not skip broken adapters."
            ) from error

    @staticmethod
    def import_adapter_file(path: str | Path, module_name: str | None = None) -> ModuleType:
        """Import an adapter module from a ``.py`` file (its family registers itself on import).

        The module stays in ``sys.modules`` under ``module_name`` (default: a name derived from the
        file) so its classes pickle and re-import; failures raise :class:`AdapterDiscoveryError`.
        """
        path = Path(path)
        if path.suffix != ".py" or not path.is_file():
            raise AdapterDiscoveryError(f"adapter module {str(path)!r}: no such .py file")
        module_name = module_name or f"vlmforge_extra_adapters.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(module_name, None)
            raise AdapterDiscoveryError(
                f"adapter module {str(path)!r} failed to import ({type(error).__name__}: {error})"
            ) from error
        return module

    @classmethod
    def adapters(cls) -> dict[str, type[ModelAdapter]]:
        cls.discover()
        return dict(cls._adapters)

    @classmethod
    def is_available(cls, adapter_class: type[ModelAdapter]) -> bool:
        """Whether the installed transformers has the family's model class and can run it."""
        return cls.unavailable_reason(adapter_class) is None

    @classmethod
    def unavailable_reason(cls, adapter_class: type[ModelAdapter]) -> str | None:
        """Why the installed transformers cannot run the family (no such class, or a release defect)."""
        model_class = adapter_class.spec.model_class
        if not hasattr(transformers, model_class):
            return f"transformers {transformers.__version__} has no {model_class}"
        fact = broken_forward(model_class)
        return fact.reason(TRANSFORMERS_VERSION) if fact is not None else None

    # ---------------------------------------------------------------- listings
    @classmethod
    def list_supported_models(cls) -> list[str]:
        """Hugging Face ids of every checkpoint whose family is usable with this transformers."""
        return [
            checkpoint
            for adapter in cls.adapters().values()
            if cls.is_available(adapter)
            for checkpoint in adapter.spec.checkpoints
        ]

    @classmethod
    def aliases(cls) -> dict[str, str]:
        return {alias: ckpt for a in cls.adapters().values() for alias, ckpt in a.spec.aliases.items()}

    @classmethod
    def listing(cls) -> list[dict[str, object]]:
        """One row per family: checkpoints, aliases, capabilities and availability."""
        rows = []
        for name, adapter in sorted(cls.adapters().items()):
            why_unavailable = cls.unavailable_reason(adapter)
            rows.append(
                {
                    "family": name,
                    "model_class": adapter.spec.model_class,
                    "available": why_unavailable is None,
                    "why_unavailable": why_unavailable,
                    "checkpoints": list(adapter.spec.checkpoints),
                    "aliases": dict(adapter.spec.aliases),
                    "tiny": f"{TINY_PREFIX}{name}",
                    "capabilities": adapter.spec.capabilities.as_dict(),
                }
            )
        return rows

    @classmethod
    def known_names(cls) -> str:
        """A human-readable list of what a user can type, for error messages."""
        adapters = cls.adapters()
        ids = sorted(c for a in adapters.values() for c in a.spec.checkpoints)
        return (
            f"aliases: {', '.join(sorted(cls.aliases()))}; "
            f"tiny models: {', '.join(TINY_PREFIX + n for n in sorted(adapters))}; "
            f"checkpoints: {', '.join(ids)}"
        )

    # -------------------------------------------------------------- resolution
    @classmethod
    def get_adapter_class(cls, name_or_path: str) -> type[ModelAdapter]:
        return cls.resolve(name_or_path).adapter_class

    @classmethod
    def resolve(cls, name_or_path: str) -> Resolution:
        """Resolve a family name, alias, checkpoint id, ``tiny/...`` name or local checkpoint dir.

        A local directory (or a hub id cached locally) resolves through its config's ``model_type``
        / ``architectures``, so fine-tunes of a supported family work without registration.
        """
        if not isinstance(name_or_path, str) or not name_or_path.strip():
            raise UnknownModelError(f"model name must be a non-empty string. Known: {cls.known_names()}")
        name = name_or_path.strip()
        adapters = cls.adapters()
        if name.startswith(TINY_PREFIX):
            inner = name[len(TINY_PREFIX) :]
            adapter = adapters.get(inner) or cls._by_checkpoint_or_alias(inner)
            if adapter is None:
                raise UnknownModelError(f"unknown tiny model {name!r}. Known: {cls.known_names()}")
            return Resolution(
                cls.check_runnable(adapter), "tiny", adapter.spec.reference_checkpoint or "", name
            )
        adapter = cls._by_checkpoint_or_alias(name)
        if adapter is not None:
            location = adapter.spec.aliases.get(name, name)
            return Resolution(cls.check_runnable(adapter), "checkpoint", location, name)
        path = Path(name).expanduser()
        if (path / "config.json").is_file():
            config = read_config(path / "config.json")
            return Resolution(
                cls.check_runnable(cls.family_for_config(config, name)), "local", str(path), name
            )
        if path.exists():
            raise UnknownModelError(
                f"{name!r} is a path but has no config.json: point at a checkpoint directory"
            )
        cached = cls._cached_config(name)
        if cached is not None:
            return Resolution(
                cls.check_runnable(cls.family_for_config(cached, name)), "checkpoint", name, name
            )
        raise UnknownModelError(
            f"unknown model {name!r}: not a family, alias, checkpoint id, tiny model or local checkpoint "
            f"directory (and no config for it in the local Hugging Face cache). Known: {cls.known_names()}"
        )

    @classmethod
    def _by_checkpoint_or_alias(cls, name: str) -> type[ModelAdapter] | None:
        for family, adapter in cls.adapters().items():
            if name == family or name in adapter.spec.checkpoints or name in adapter.spec.aliases:
                return adapter
        return None

    @classmethod
    def family_for_config(cls, config: dict, name: str) -> type[ModelAdapter]:
        """The family of a checkpoint config (``model_type`` or ``architectures``), or a clear error."""
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            architectures = []  # a malformed field: decide by model_type alone
        for adapter in cls.adapters().values():
            if model_type in adapter.spec.model_types or adapter.spec.model_class in architectures:
                return adapter
        raise UnsupportedArchitectureError(
            f"{name!r} is a {model_type!r} checkpoint ({', '.join(architectures) or 'no architectures'}), "
            "which no registered family supports. Add the family with "
            f"`scaffold-new-model {name}` (it researches the architecture and writes the adapter)."
        )

    @classmethod
    def check_runnable(cls, adapter: type[ModelAdapter]) -> type[ModelAdapter]:
        """``adapter`` when the installed transformers can run its family, else a clear error.

        Raises:
            UnsupportedArchitectureError: transformers has no such model class.
            UnsupportedReleaseError: the installed release cannot run the class (names releases that can).
        """
        if not hasattr(transformers, adapter.spec.model_class):
            raise UnsupportedArchitectureError(
                f"family {adapter.spec.name!r} needs transformers.{adapter.spec.model_class}, which "
                f"transformers {transformers.__version__} lacks. Install a transformers that has it."
            )
        # Refused at load: the model would build, and then every forward would raise from inside transformers.
        if (fact := broken_forward(adapter.spec.model_class)) is not None:
            raise UnsupportedReleaseError(
                f"family {adapter.spec.name!r} cannot run on the installed transformers "
                f"{transformers.__version__}: {fact.defect} (a defect of that transformers release, not of "
                f"vlmforge or the checkpoint). It runs on transformers {fact.works_on}: install one of "
                "those.",
                fact.reason(TRANSFORMERS_VERSION),
            )
        return adapter

    @staticmethod
    def _cached_config(name: str) -> dict | None:
        """The config.json of a hub id if it is in the local HF cache (never downloads)."""
        if name.count("/") != 1:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
            return None
        try:
            path = try_to_load_from_cache(name, "config.json")
        except Exception:  # invalid repo id syntax and the like: treat as "not cached"
            return None
        if isinstance(path, str) and Path(path).is_file():
            return read_config(Path(path))
        return None


def read_config(path: Path) -> dict:
    """A checkpoint's ``config.json`` as a dict, or a :class:`CheckpointLoadError` saying what is wrong."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointLoadError(
            f"{path} is not a readable JSON file ({type(error).__name__}: {error}); the checkpoint is "
            "corrupt or incomplete: re-download it or fix the file"
        ) from error
    if not isinstance(config, dict):
        raise CheckpointLoadError(
            f"{path} holds a JSON {type(config).__name__}, not an object with model_type / architectures; "
            "the checkpoint is corrupt: re-download it or fix the file"
        )
    return config
