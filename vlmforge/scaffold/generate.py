"""Render the family template, validate the result, and install it atomically.

The flow is deliberately all-or-nothing: copier renders into a fresh temporary directory, the
generated module must parse *and* import (under a throwaway module name, with the registry
isolated so the check leaves no trace), and only then are the files moved into the destination
with ``os.replace`` (atomic per file; a failure half-way restores what was there before).
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmforge.core.errors import AdapterDiscoveryError
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.spec import FamilySpec
from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.schema import TEMPLATE_DIR, write_questions

__all__ = [
    "TEMPLATE_DIR",
    "GenerationError",
    "RenderedFamily",
    "answers_relpath",
    "default_template",
    "existing_family_conflicts",
    "install",
    "module_relpath",
    "render_family",
    "validate_module",
]

ADAPTERS_RELDIR = Path("vlmforge") / "adapters"
# A vlmforge git checkout is itself a template source (its root copier.yml points at TEMPLATE_DIR).
_CHECKOUT_ROOT = TEMPLATE_DIR.parents[2]


def default_template(checkout: Path = _CHECKOUT_ROOT) -> tuple[str, str | None]:
    """The template source and git ref to scaffold from.

    From a clean git checkout of vlmforge, the checkout root at HEAD (a
    versioned template: the answers file records ``_src_path`` and ``_commit``, so ``copier update``
    works later). Otherwise (an installed wheel, or a checkout with uncommitted changes, which copier
    would pin to a throwaway commit that ``copier update`` cannot find) the packaged template.
    """
    if not ((checkout / ".git").exists() and (checkout / "copier.yml").is_file() and shutil.which("git")):
        return str(TEMPLATE_DIR), None
    # copier snapshots *any* uncommitted change of the repository into a throwaway commit.
    status = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    )
    if status.returncode != 0 or status.stdout.strip():
        return str(TEMPLATE_DIR), None
    return str(checkout), "HEAD"


class GenerationError(ScaffoldError):
    """The template rendered something that does not parse, import or register; nothing was written."""


def module_relpath(name: str) -> Path:
    """Where a family module lives inside a project: ``vlmforge/adapters/<name>.py``."""
    return ADAPTERS_RELDIR / f"{name}.py"


def answers_relpath(name: str) -> Path:
    """The copier answers file kept next to the module (what ``copier update -a`` needs)."""
    return ADAPTERS_RELDIR / f".copier-answers.{name}.yml"


@dataclass(frozen=True)
class RenderedFamily:
    """A rendered (not yet installed) family.

    Attributes:
        root: the temporary directory copier rendered into (delete it with :meth:`cleanup`).
        name: the family name actually used (the questionnaire may change it).
        files: rendered files, relative to ``root`` (module first).
        answers: the answers copier recorded.
    """

    root: Path
    name: str
    files: tuple[Path, ...]
    answers: dict[str, Any]

    @property
    def module(self) -> Path:
        return self.root / module_relpath(self.name)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def _template_for(template: str | Path, spec_class: type[FamilySpec]) -> Iterator[str]:
    """The template source to render ``spec_class`` from: ``template`` itself for :class:`FamilySpec`
    (its questions are generated from it and committed), else a temporary copy of the local template
    directory with the questions regenerated from ``spec_class``."""
    if spec_class is FamilySpec:
        yield str(template)
        return
    if not (Path(template) / "copier.yml").is_file():
        raise GenerationError(f"a spec subclass needs a local template directory to stage, not {template}")
    staging = Path(tempfile.mkdtemp(prefix="vlmforge-template-"))
    try:
        staged = staging / "family"
        shutil.copytree(template, staged)
        write_questions(staged / "copier.yml", spec_class)
        yield str(staged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def render_family(
    answers: Mapping[str, Any],
    *,
    template: str | Path = TEMPLATE_DIR,
    interactive: bool = False,
    vcs_ref: str | None = None,
    spec_class: type[FamilySpec] = FamilySpec,
) -> RenderedFamily:
    """Render the family template into a fresh temporary directory.

    Args:
        answers: copier answers (see :meth:`vlmforge.scaffold.research.ResearchReport.copier_answers`).
        template: template source: the packaged template, or a git repository / URL of it (a git
            template records ``_commit`` in the answers file, which ``copier update`` needs).
        interactive: ask copier's questionnaire with ``answers`` as the defaults.
        vcs_ref: git ref of a git template (default: its latest tag).
        spec_class: the spec the module declares; a :class:`FamilySpec` subclass with more fields is
            rendered from a staged copy of a local ``template`` whose questions come from it.

    Raises:
        GenerationError: copier failed (a validator refused an answer, the template is broken...).
    """
    import copier

    root = Path(tempfile.mkdtemp(prefix="vlmforge-scaffold-"))
    kwargs: dict[str, Any] = {"defaults": not interactive, "quiet": True, "unsafe": False, "overwrite": True}
    if interactive:
        kwargs["user_defaults"] = dict(answers)
    else:
        kwargs["data"] = dict(answers)
    if vcs_ref is not None:
        kwargs["vcs_ref"] = vcs_ref
    try:
        with _template_for(template, spec_class) as source:
            copier.run_copy(source, root, **kwargs)
    except (KeyboardInterrupt, Exception) as error:
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(error, KeyboardInterrupt):
            raise
        raise GenerationError(f"rendering the family template {template} failed: {error}") from error
    answer_files = sorted((root / ADAPTERS_RELDIR).glob(".copier-answers.*.yml"))
    if len(answer_files) != 1:
        shutil.rmtree(root, ignore_errors=True)
        raise GenerationError(
            f"the template {template} did not write exactly one answers file into {ADAPTERS_RELDIR}"
        )
    recorded = yaml.safe_load(answer_files[0].read_text()) or {}
    name = str(recorded.get("name", answers.get("name")))
    files = sorted(
        (p.relative_to(root) for p in root.rglob("*") if p.is_file()), key=lambda p: p.suffix != ".py"
    )
    return RenderedFamily(root=root, name=name, files=tuple(files), answers=recorded)


def validate_module(path: Path, name: str) -> FamilySpec:
    """Check that a generated module parses, imports and registers family ``name``; return its spec.

    Raises:
        GenerationError: with the reason; the caller must not install the file.
    """
    source = path.read_text()
    try:
        ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise GenerationError(
            f"the generated module does not parse ({error.msg}, line {error.lineno}: {error.text!r}); "
            "this is a template bug, nothing was written"
        ) from error
    module_name = f"_vlmforge_scaffold_check_{name}_{uuid.uuid4().hex}"
    try:
        with ModelRegistry.isolated() as registry:
            try:
                module = ModelRegistry.import_adapter_file(path, module_name)
            except AdapterDiscoveryError as error:
                raise GenerationError(
                    f"the generated module does not import ({error.__cause__!r}); nothing was written"
                ) from error
            registered = registry.get(name)
    finally:
        sys.modules.pop(module_name, None)
    family_spec = getattr(module, "SPEC", None)
    if not isinstance(family_spec, FamilySpec):
        raise GenerationError("the generated module defines no SPEC = FamilySpec(...); nothing was written")
    if registered is None or registered.spec is not family_spec:
        raise GenerationError(f"the generated module does not register family {name!r} with its SPEC")
    return family_spec


def _declared_families(adapters_dir: Path) -> dict[Path, tuple[str | None, tuple[str, ...]]]:
    """``{file: (name, model_types)}`` of the family modules in a directory, read with ``ast`` (no import)."""
    found: dict[Path, tuple[str | None, tuple[str, ...]]] = {}
    for path in sorted(adapters_dir.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FamilySpec":
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                name = keywords.get("name")
                types = keywords.get("model_types")
                found[path] = (
                    name.value if isinstance(name, ast.Constant) else None,
                    tuple(
                        e.value
                        for e in getattr(types, "elts", [])
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    ),
                )
    return found


def existing_family_conflicts(dest: Path, name: str, model_types: tuple[str, ...]) -> list[str]:
    """Why writing family ``name`` into ``dest`` would clash with what is there (empty: no clash)."""
    adapters_dir = dest / ADAPTERS_RELDIR
    conflicts = []
    module = dest / module_relpath(name)
    if module.exists():
        conflicts.append(f"family module {module} already exists")
    for path, (other, types) in _declared_families(adapters_dir).items() if adapters_dir.is_dir() else []:
        if path == module:
            continue
        if other == name:
            conflicts.append(f"{path} already declares a family named {name!r}")
        shared = sorted(set(types) & set(model_types))
        if shared:
            conflicts.append(f"{path} (family {other!r}) already handles model_type {', '.join(shared)}")
    return conflicts


def _write_error(directory: Path, error: OSError) -> ScaffoldError:
    reason = error.strerror or str(error)
    return ScaffoldError(
        f"cannot write into {directory} ({reason}). Nothing was written. Pass a writable --dest (a project "
        "with a vlmforge/adapters folder), or fix the folder's permissions."
    )


def install(rendered: RenderedFamily, dest: Path, *, force: bool = False) -> list[Path]:
    """Move the rendered files into ``dest`` atomically; return the written paths.

    Every file is first staged next to its target and then ``os.replace``-d into place; if anything
    fails (or is interrupted) the targets already replaced are restored, so ``dest`` ends up either
    fully updated or unchanged.

    Raises:
        ScaffoldError: the family exists (without ``force``) or ``dest`` is not writable.
    """
    if not force:
        conflicts = existing_family_conflicts(dest, rendered.name, ())
        if conflicts:
            raise ScaffoldError("; ".join(conflicts) + ". Pass --force to overwrite it.")
    targets = [(rendered.root / rel, dest / rel) for rel in rendered.files]
    staged: list[tuple[Path, Path]] = []
    replaced: list[tuple[Path, bytes | None]] = []
    directory = dest / ADAPTERS_RELDIR
    try:
        for source, target in targets:
            directory = target.parent
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(source.read_bytes())
            os.chmod(staging, 0o644)
            staged.append((Path(staging), target))
        for staging, target in staged:
            previous = target.read_bytes() if target.exists() else None
            os.replace(staging, target)
            replaced.append((target, previous))
    except BaseException as error:
        for staging, _ in staged:
            with contextlib.suppress(OSError):
                staging.unlink()
        for target, previous in reversed(replaced):
            with contextlib.suppress(OSError):
                if previous is None:
                    target.unlink()
                else:
                    target.write_bytes(previous)
        if isinstance(error, OSError):
            raise _write_error(directory, error) from error
        raise
    return [target for _, target in targets]
