"""Which existing families a new one would clash with (name, model_type, checkpoint, alias)."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from vlmforge.core.registry import ModelRegistry

__all__ = [
    "DeclaredFamily",
    "existing_family_conflicts",
]


@dataclass(frozen=True)
class DeclaredFamily:
    """What a family module declares, read from its source (``ast``, no import) or from the registry."""

    where: str
    name: str | None
    model_types: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


def _strings(node: ast.AST | None) -> tuple[str, ...]:
    """The string constants of a tuple/list literal, or the string keys of a dict literal."""
    items = getattr(node, "keys", None) or getattr(node, "elts", None) or []
    return tuple(e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str))


def _declared_families(adapters_dir: Path) -> dict[Path, DeclaredFamily]:
    """The ``FamilySpec(...)`` calls of the modules in a directory, read with ``ast`` (no import)."""
    found: dict[Path, DeclaredFamily] = {}
    for path in sorted(adapters_dir.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FamilySpec":
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                name = keywords.get("name")
                found[path] = DeclaredFamily(
                    where=str(path),
                    name=name.value if isinstance(name, ast.Constant) else None,
                    model_types=_strings(keywords.get("model_types")),
                    checkpoints=_strings(keywords.get("checkpoints")),
                    aliases=_strings(keywords.get("aliases")),
                )
    return found


def _registered_families(skip_files: set[Path]) -> list[DeclaredFamily]:
    """The families this Python environment already knows (built-in, entry points, loaded modules)."""
    families = []
    for name, adapter in sorted(ModelRegistry.adapters().items()):
        module_file = getattr(sys.modules.get(adapter.__module__), "__file__", None)
        if module_file is not None and Path(module_file).resolve() in skip_files:
            continue  # the same file as a module in the destination: reported from the file already
        spec = adapter.spec
        families.append(
            DeclaredFamily(
                where=f"installed family {name!r} ({adapter.__module__})",
                name=name,
                model_types=tuple(spec.model_types),
                checkpoints=tuple(spec.checkpoints),
                aliases=tuple(spec.aliases),
            )
        )
    return families


def existing_family_conflicts(
    adapters_dir: Path,
    name: str,
    model_types: tuple[str, ...] = (),
    *,
    checkpoints: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    registry: bool = False,
) -> list[str]:
    """Why writing family ``name`` into ``adapters_dir`` would clash with what exists (empty: no clash).

    A clash is a module of the same file name, or another family (a module in ``adapters_dir`` or,
    with ``registry``, any family the environment already registers) with the same name, model_type,
    checkpoint or alias: name resolution would then silently pick one of the two.
    """
    conflicts = []
    module = adapters_dir / f"{name}.py"
    if module.exists():
        conflicts.append(f"family module {module} already exists")
    declared = _declared_families(adapters_dir) if adapters_dir.is_dir() else {}
    others = [family for path, family in declared.items() if path != module]
    if registry:
        skip = {path.resolve() for path in declared}
        others += _registered_families(skip)
    wanted = {"model_type": model_types, "checkpoint": checkpoints, "alias": aliases}
    for other in others:
        if other.name == name:
            conflicts.append(f"{other.where} already declares a family named {name!r}")
        taken = {"model_type": other.model_types, "checkpoint": other.checkpoints, "alias": other.aliases}
        for what, values in wanted.items():
            shared = sorted(set(values) & set(taken[what]))
            if shared:
                label = (
                    other.where
                    if other.where.startswith("installed")
                    else f"{other.where} (family {other.name!r})"
                )
                conflicts.append(f"{label} already handles {what} {', '.join(shared)}")
    return conflicts
