"""Render the family template, validate the result, and install it atomically.

The flow is deliberately all-or-nothing: copier renders into a fresh temporary directory, the
generated module must parse *and* import (under a throwaway module name, with the registry
isolated so the check leaves no trace), and only then are the files moved into the destination
with ``os.replace`` (atomic per file; a failure half-way restores what was there before).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmforge.core.errors import AdapterDiscoveryError
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.spec import FamilySpec
from vlmforge.scaffold.errors import InstalledThenInterrupted, ScaffoldError
from vlmforge.scaffold.schema import TEMPLATE_DIR, write_questions

__all__ = [
    "KILL_AT_ENV",
    "PROJECT_PACKAGE",
    "TEMPLATE_DIR",
    "Destination",
    "GenerationError",
    "RenderedFamily",
    "answers_relpath",
    "checkpoint",
    "default_template",
    "existing_family_conflicts",
    "install",
    "module_relpath",
    "render_family",
    "resolve_destination",
    "sweep_stale",
    "temp_prefix",
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


# ---------------------------------------------------------------------------------------- destinations
#: The package a user's own project keeps its families in (a ``vlmforge/`` folder would shadow vlmforge).
PROJECT_PACKAGE = "vlmforge_adapters"
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
_PACKAGE_INIT = '"""vlmforge family modules of this project (written by ``scaffold-new-model``)."""\n'


@dataclass(frozen=True)
class Destination:
    """Where a family is installed.

    Attributes:
        root: the project root (``--dest``); it may not exist yet (then ``install`` creates it).
        package_dir: the folder the module goes into: ``<root>/vlmforge/adapters`` in a vlmforge
            checkout, else ``<root>/vlmforge_adapters`` (a package of the project's own families).
    """

    root: Path
    package_dir: Path

    @property
    def is_checkout(self) -> bool:
        """A vlmforge source tree: its ``vlmforge.adapters`` package discovers the module by itself."""
        return self.package_dir == self.root / ADAPTERS_RELDIR

    @property
    def package(self) -> str:
        return ".".join(self.package_dir.relative_to(self.root).parts)

    def module(self, name: str) -> Path:
        return self.package_dir / f"{name}.py"

    def answers(self, name: str) -> Path:
        return self.package_dir / f".copier-answers.{name}.yml"


def _is_installed_location(path: Path) -> bool:
    """Whether ``path`` lies inside an interpreter's site-packages (never a place to write into)."""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")} | set(site.getsitepackages())
    return any(path == Path(r).resolve() or Path(r).resolve() in path.parents for r in roots if r)


def resolve_destination(dest: Path) -> Destination:
    """Decide where ``--dest`` puts a family, or refuse with what to do instead (nothing is created).

    Accepted: a vlmforge checkout (``vlmforge/adapters`` exists), a Python project (``pyproject.toml``,
    ``setup.py``, ``setup.cfg`` or a ``vlmforge_adapters`` folder), or a path that does not exist yet in
    an existing folder (a new project). An existing folder that is none of these is refused, so that a
    typo or a home directory does not silently grow a package; so is anything inside site-packages.
    """
    root = Path(os.path.abspath(dest.expanduser()))
    if _is_installed_location(root):
        raise ScaffoldError(
            f"--dest {root} is inside the installed packages (site-packages); scaffolded families belong "
            "in your own project. Run scaffold-new-model from your project's root or pass --dest <project>."
        )
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"--dest {root} is a file, not a folder: pass your project's root folder")
    if not root.exists():
        if not root.parent.is_dir():
            raise ScaffoldError(
                f"--dest {root}: its parent folder {root.parent} does not exist. Pass an existing project, "
                "or a new folder inside an existing one (scaffold-new-model creates only the last level)."
            )
        return Destination(root, root / PROJECT_PACKAGE)
    if (root / ADAPTERS_RELDIR).is_dir():
        return Destination(root, root / ADAPTERS_RELDIR)
    if (root / PROJECT_PACKAGE).is_dir() or any((root / marker).is_file() for marker in _PROJECT_MARKERS):
        return Destination(root, root / PROJECT_PACKAGE)
    raise ScaffoldError(
        f"--dest {root} exists but is not a Python project (no pyproject.toml, setup.py, setup.cfg, "
        f"{PROJECT_PACKAGE}/ or vlmforge/adapters/ in it), so nothing was written there. Pass your "
        "project's root, or a folder that does not exist yet to start a new one."
    )


# ------------------------------------------------------------------------------- crash-safe install
#: Test seam: ``VLMFORGE_TEST_KILL_AT=<step>`` SIGKILLs this process at that install step, so tests can
#: check the next run's recovery deterministically (a real crash or kill -9 looks the same).
KILL_AT_ENV = "VLMFORGE_TEST_KILL_AT"
_STAGING, _BACKUP, _JOURNAL = ".vlmforge-staging", ".vlmforge-backup", ".vlmforge-install."
#: Prefixes of this package's temporary folders; each embeds its creator's pid for the start-up sweep.
TEMP_PREFIXES = ("vlmforge-scaffold-", "vlmforge-template-", "vlmforge-verify-")
_deferred_interrupt = threading.Event()


def checkpoint(step: str, *, interruptible: bool = True) -> None:
    """Called between the install's steps: where a deferred Ctrl-C takes effect, and the test seam."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if interruptible and _deferred_interrupt.is_set():
        _deferred_interrupt.clear()
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_at_checkpoints() -> Iterator[None]:
    """Turn Ctrl-C during the block into a KeyboardInterrupt at the next :func:`checkpoint`.

    Rollback then never runs half-interrupted itself; a Ctrl-C after the last checkpoint (the
    install is committed) is raised when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred_interrupt.clear()
    previous = signal.signal(signal.SIGINT, lambda *_: _deferred_interrupt.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if _deferred_interrupt.is_set():
            _deferred_interrupt.clear()
            raise KeyboardInterrupt


def temp_prefix(kind: str) -> str:
    """``vlmforge-<kind>-<pid>-``: a temporary folder name the start-up sweep can attribute."""
    return f"vlmforge-{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _pid_of(name: str, marker: str) -> int | None:
    """The pid embedded in a staging/backup/journal/temp name (``...<marker><pid>-...``), if any."""
    _, found, rest = name.partition(marker)
    digits = rest.split("-", 1)[0].split(".", 1)[0]
    return int(digits) if found and digits.isdigit() else None


@dataclass
class _Plan:
    """The install journal: every file and folder the install may create, named before any is made."""

    pid: int
    family: str
    entries: list[dict[str, Any]]  # {"target", "staging", "backup" (or None: the target is new)}
    created_dirs: list[str]
    journal: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "family": self.family,
                "entries": self.entries,
                "created_dirs": self.created_dirs,
            }
        )


def _rollback(plan: _Plan) -> None:
    """Undo ``plan`` from whatever state it reached; idempotent, so a crashed rollback can rerun.

    A target whose staging file is gone was replaced: restore its backup, or delete it if it is new.
    """
    for entry in reversed(plan.entries):
        target, staging = Path(entry["target"]), Path(entry["staging"])
        backup = Path(entry["backup"]) if entry["backup"] else None
        if backup is not None and backup.exists():
            if target.exists() and os.path.samefile(backup, target):
                backup.unlink()  # not replaced yet; rename() between two links of one file is a no-op
            else:
                os.replace(backup, target)
        elif backup is None and not staging.exists() and target.exists():
            target.unlink()
        staging.unlink(missing_ok=True)
    for directory in reversed(plan.created_dirs):
        with contextlib.suppress(OSError):  # only if empty: never remove what someone else put there
            Path(directory).rmdir()
    plan.journal.unlink(missing_ok=True)


def _write_error(directory: Path, error: OSError) -> ScaffoldError:
    reason = error.strerror or str(error)
    return ScaffoldError(
        f"cannot write into {directory} ({reason}). Nothing was written. Pass a writable --dest (your "
        "project's root), or fix the folder's permissions."
    )


def _plan(rendered: RenderedFamily, destination: Destination) -> tuple[_Plan, list[bytes]]:
    """Name every file and folder the install will create (the journal), with each file's content."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    contents: list[bytes] = []
    targets: list[Path] = []
    for rel in rendered.files:
        if ADAPTERS_RELDIR not in rel.parents:
            raise GenerationError(
                f"the template rendered {rel} outside {ADAPTERS_RELDIR}; nothing was written"
            )
        targets.append(destination.package_dir / rel.relative_to(ADAPTERS_RELDIR))
        contents.append((rendered.root / rel).read_bytes())
    init = destination.package_dir / "__init__.py"
    if not destination.is_checkout and not init.exists():  # the project's package needs one to import
        targets.append(init)
        contents.append(_PACKAGE_INIT.encode())
    entries = [
        {
            "target": str(target),
            "staging": str(target.parent / f".{target.name}.{tag}{_STAGING}"),
            "backup": str(target.parent / f".{target.name}.{tag}{_BACKUP}") if target.exists() else None,
        }
        for target in targets
    ]
    created = [str(d) for d in (destination.root, destination.package_dir) if not d.exists()]
    anchor = next(
        d for d in (destination.package_dir, destination.root, destination.root.parent) if d.is_dir()
    )
    journal = anchor / f"{_JOURNAL}{tag}.json"
    return _Plan(os.getpid(), rendered.name, entries, list(dict.fromkeys(created)), journal), contents


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never overwrite) with ``data``, flushed to disk before any rename relies on it."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _apply(plan: _Plan, contents: list[bytes]) -> None:
    """Journal, folders, staging files, backups, renames: a :func:`checkpoint` between every two."""
    journal_tmp = plan.journal.with_name(plan.journal.name + ".tmp")
    _write_new(journal_tmp, plan.to_json().encode())
    os.replace(journal_tmp, plan.journal)
    checkpoint("journaled")
    for directory in plan.created_dirs:
        Path(directory).mkdir()
        checkpoint(f"mkdir:{Path(directory).name}")
    for index, (entry, data) in enumerate(zip(plan.entries, contents)):
        _write_new(Path(entry["staging"]), data)
        checkpoint(f"staged:{index}")
    for index, entry in enumerate(plan.entries):
        if entry["backup"]:
            try:
                os.link(entry["target"], entry["backup"])
            except OSError:  # a file system without hard links: a copy restores as well
                shutil.copy2(entry["target"], entry["backup"])
            checkpoint(f"backup:{index}")
    for index, entry in enumerate(plan.entries):
        checkpoint(f"replace:{index}")
        os.replace(entry["staging"], entry["target"])
        checkpoint(f"replaced:{index}")


def install(rendered: RenderedFamily, destination: Destination, *, force: bool = False) -> list[Path]:
    """Move the rendered files into ``destination`` crash-safely; return the written paths.

    A journal naming every file and folder the install may create is written first; then staging
    files, backups of overwritten targets, and one ``os.replace`` per file; deleting the journal is
    the commit. An exception or Ctrl-C at any point rolls back to the state before; after a crash or
    SIGKILL, :func:`sweep_stale` in the next run rolls back from the journal.

    Raises:
        ScaffoldError: the family exists (without ``force``) or the destination is not writable.
        InstalledThenInterrupted: Ctrl-C arrived after the commit (the family is installed).
    """
    if not force:
        conflicts = existing_family_conflicts(destination.package_dir, rendered.name)
        if conflicts:
            raise ScaffoldError("; ".join(conflicts) + ". Pass --force to overwrite it.")
    plan, contents = _plan(rendered, destination)
    committed = False
    try:
        with _interrupts_at_checkpoints():
            try:
                _apply(plan, contents)
                plan.journal.unlink()  # the commit
                committed = True
            except BaseException as error:
                _rollback_or_explain(plan)
                if isinstance(error, OSError):
                    raise _write_error(destination.package_dir, error) from error
                raise
            checkpoint("committed", interruptible=False)
            for entry in plan.entries:
                if entry["backup"]:
                    Path(entry["backup"]).unlink(missing_ok=True)
    except KeyboardInterrupt as interrupt:
        if not committed:
            raise
        raise InstalledThenInterrupted([Path(entry["target"]) for entry in plan.entries]) from interrupt
    return [Path(entry["target"]) for entry in plan.entries]


def _rollback_or_explain(plan: _Plan) -> None:
    """Roll back; if even that fails, say exactly what to clean up by hand."""
    try:
        _rollback(plan)
    except OSError as error:
        raise ScaffoldError(
            f"the install failed and so did its rollback ({error}). The journal {plan.journal} lists "
            "what it touched; the next scaffold-new-model run retries the rollback from it."
        ) from error


def _stale_tag_pid(name: str) -> int | None:
    """The pid in a staging / backup / journal file name this module made, else None."""
    for suffix in (_STAGING, _BACKUP):
        if name.endswith(suffix):
            tag = name[: -len(suffix)].rsplit(".", 1)[-1]
            break
    else:
        if not name.startswith(_JOURNAL):
            return None
        tag = name[len(_JOURNAL) :].split(".", 1)[0]
    pid = tag.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _recover_journal(journal: Path, pid: int) -> str:
    try:
        data = json.loads(journal.read_text())
        plan = _Plan(data["pid"], data["family"], data["entries"], data["created_dirs"], journal)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ScaffoldError(
            f"{journal} is the unreadable install journal of a scaffold-new-model run (pid {pid}) that "
            f"crashed ({error}). Check {journal.parent} by hand for a half-written family, then delete it."
        ) from error
    _rollback_or_explain(plan)
    return (
        f"recovered: an earlier run (pid {pid}) was killed while installing family {plan.family!r}; "
        "its partial files were removed and overwritten files restored"
    )


def sweep_stale(root: Path) -> list[str]:
    """Clean up after scaffold-new-model runs that died (SIGKILL, power loss); return what was done.

    Journals of dead processes are rolled back (a half-installed family is undone), then their
    staging and backup files and their temporary folders are removed. Live runs are left alone.
    """
    notes: list[str] = []
    root = Path(os.path.abspath(root.expanduser()))
    # Every folder a journal or staging file of an install into ``root`` can be in (see _plan).
    folders = [root / ADAPTERS_RELDIR, root / PROJECT_PACKAGE, root, root.parent]
    folders = [d for d in dict.fromkeys(folders) if d.is_dir()]
    for folder in folders:
        for journal in sorted(folder.glob(f"{_JOURNAL}*.json")):
            pid = _stale_tag_pid(journal.name)
            if pid is not None and not _pid_alive(pid):
                notes.append(_recover_journal(journal, pid))
    for folder in [d for d in folders if d.is_dir()]:  # a rollback may have removed some
        for path in sorted(folder.iterdir()):
            pid = _stale_tag_pid(path.name)
            if pid is not None and not _pid_alive(pid) and path.is_file():
                path.unlink(missing_ok=True)
                notes.append(f"removed {path}, left by a killed run (pid {pid})")
    temp = Path(tempfile.gettempdir())
    for path in sorted(temp.glob("vlmforge-*-*")):
        prefix = next((p for p in TEMP_PREFIXES if path.name.startswith(p)), None)
        pid = path.name[len(prefix) :].split("-", 1)[0] if prefix else ""
        if pid.isdigit() and not _pid_alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path}, left by a killed run (pid {pid})")
    return notes
