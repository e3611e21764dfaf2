"""Render the family template into a temporary directory and validate the result.

The flow is deliberately all-or-nothing: copier renders into a fresh temporary directory, the
generated module must parse *and* import (under a throwaway module name, with the registry
isolated so the check leaves no trace); only then does :mod:`.install` move the files into the
destination (:mod:`.destinations`), after :mod:`.conflicts` found no clash with another family.
"""

from __future__ import annotations

import ast
import contextlib
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
from vlmforge.scaffold.destinations import ADAPTERS_RELDIR, module_relpath
from vlmforge.scaffold.errors import GenerationError
from vlmforge.scaffold.install import temp_prefix
from vlmforge.scaffold.schema import TEMPLATE_DIR, write_questions

__all__ = [
    "TEMPLATE_DIR",
    "GenerationError",
    "RenderedFamily",
    "default_template",
    "render_family",
    "validate_module",
]

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
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix("template")))
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

    root = Path(tempfile.mkdtemp(prefix=temp_prefix("scaffold")))
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
