"""Where a family is written: a vlmforge checkout's ``vlmforge/adapters/`` or a project's own package."""

from __future__ import annotations

import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from vlmforge.scaffold.errors import ScaffoldError

__all__ = [
    "ADAPTERS_RELDIR",
    "PACKAGE_INIT",
    "PROJECT_PACKAGE",
    "Destination",
    "answers_relpath",
    "module_relpath",
    "resolve_destination",
]

ADAPTERS_RELDIR = Path("vlmforge") / "adapters"


def module_relpath(name: str) -> Path:
    """Where a family module lives inside a project: ``vlmforge/adapters/<name>.py``."""
    return ADAPTERS_RELDIR / f"{name}.py"


def answers_relpath(name: str) -> Path:
    """The copier answers file kept next to the module (what ``copier update -a`` needs)."""
    return ADAPTERS_RELDIR / f".copier-answers.{name}.yml"


# ---------------------------------------------------------------------------------------- destinations
#: The package a user's own project keeps its families in (a ``vlmforge/`` folder would shadow vlmforge).
PROJECT_PACKAGE = "vlmforge_adapters"
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
PACKAGE_INIT = '"""vlmforge family modules of this project (written by ``scaffold-new-model``)."""\n'


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
