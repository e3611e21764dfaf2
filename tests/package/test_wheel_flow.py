"""A user who pip-installs the vlmforge wheel (not editable) scaffolds a family into their own project.

Builds the wheel from this tree, installs it with ``--no-deps`` into a fresh venv whose heavy
dependencies (torch, transformers, copier, pytest) come from this environment through a ``.pth``
file, then, from a temporary project: ``scaffold-new-model`` (default ``--dest``: the project), the
printed "Next:" command (the harness, via ``--adapter-module``), and discovery through the
``vlmforge.adapters`` entry-point group after installing the project.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("vlmforge", "vlmforge_launcher.py", "pyproject.toml", "README.md", "copier.yml")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(command: list[str], cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"$ {shlex.join(command)}\n{output[-4000:]}"
    return output


def fresh_venv_with_wheel(tmp_path: Path) -> Path:
    """A venv with the wheel installed (no deps) that sees this environment's packages; its python."""
    source = tmp_path / "src"
    source.mkdir()
    for name in SHIPPED:  # build from a copy: an in-tree build would write build/ into the shared tree
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."], source)
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    # Appended after the venv's own site-packages: the wheel's vlmforge wins over this tree's editable one
    # (whose finder is a .pth *inside* that folder, which a path added by .pth does not run).
    Path(purelib.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = (tmp_path / "dist").glob("vlmforge-*.whl")
    run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp_path)
    return python


def test_wheel_user_scaffolds_into_their_own_project(tmp_path: Path) -> None:
    python = fresh_venv_with_wheel(tmp_path)
    installed = run([str(python), "-c", "import vlmforge; print(vlmforge.__file__)"], tmp_path).strip()
    assert "site-packages" in installed and str(tmp_path / "venv") in installed
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "myproject"\nversion = "0.1"\n\n'
        '[tool.setuptools]\npackages = ["vlmforge_adapters"]\n'
    )
    out = run([str(python.parent / "scaffold-new-model"), "vipllava", "--name", "my_next"], project)
    module = project / "vlmforge_adapters" / "my_next.py"
    assert module.is_file() and (project / "vlmforge_adapters/__init__.py").is_file()
    assert not list((Path(installed).parent / "adapters").glob("my_next*"))  # never into site-packages

    # The printed "Next:" command works as printed (pytest run through the venv's python).
    next_command = out.split("then `", 1)[1].split("`", 1)[0]
    argv = shlex.split(next_command)
    assert argv[0] == "pytest" and "--adapter-module" in argv
    checks = ["-k", "contract_accessors or attention_vs_eager", "-p", "no:cacheprovider", "-q"]
    harness = run([str(python), "-m", *argv, *checks], project)
    assert "attention_vs_eager" in harness and "passed" in harness

    # The entry point the CLI suggests makes the family discoverable once the project is installed.
    snippet = out.split("reinstall your project:\n", 1)[1].split("\n", 2)[:2]
    with (project / "pyproject.toml").open("a") as stream:
        stream.write("\n" + "\n".join(line.strip() for line in snippet) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    run([*pip, "--no-build-isolation", "--no-index", str(project)], tmp_path)
    listing = run([str(python), "-m", "vlmforge", "list"], tmp_path)
    assert "my_next" in listing and "tiny/my_next" in listing
