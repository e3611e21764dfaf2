"""The CI workflow (``.github/workflows/conformance.yml``) is valid and its matrix is the registry.

The workflow is validated against the GitHub workflow JSON schema shipped by ``check-jsonschema``
(a real validator from PyPI, in the ``dev`` extra), and a broken copy must fail it. The families
job's command is run exactly as written in the workflow, and its JSON must be the registered families.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmforge.core.registry import ModelRegistry
from vlmforge.harness.plugin import DTYPES

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
FROM_JOB_OUTPUT = re.compile(r"^\$\{\{\s*fromJSON\(\s*needs\.([\w-]+)\.outputs\.([\w-]+)\s*\)\s*\}\}$")
STEP_OUTPUT = re.compile(r"^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


def load_workflow() -> dict[str, Any]:
    """The workflow as data (YAML 1.1 reads the ``on`` key as ``True``: it is renamed back)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate ``path`` with check-jsonschema's builtin GitHub workflow schema (no network needed)."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)


def run_step(step: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Run a step's ``run`` script verbatim with bash, as Actions does; the ``$GITHUB_OUTPUT`` it wrote."""
    output = tmp_path / "github_output"
    output.write_text("")
    bin_dir = str(Path(sys.executable).parent)  # `python` in the script is this environment's
    env = {
        **os.environ,
        "GITHUB_OUTPUT": str(output),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"step {step.get('name')!r} failed:\n{result.stderr[-4000:]}"
    return dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)


def job_and_output_feeding_the_matrix(workflow: dict[str, Any]) -> tuple[str, str]:
    """``(job, output)`` named by ``fromJSON(needs.<job>.outputs.<output>)`` in the family axis."""
    family_axis = workflow["jobs"]["conformance"]["strategy"]["matrix"]["family"]
    assert isinstance(family_axis, str), f"the family axis is a hand-written list: {family_axis!r}"
    match = FROM_JOB_OUTPUT.match(family_axis.strip())
    assert match, f"the family axis is not fromJSON(needs.<job>.outputs.<name>): {family_axis!r}"
    return match.group(1), match.group(2)


def registered_families() -> list[str]:
    """What ``--all-models`` tests: the registered families usable with the installed transformers."""
    return sorted(name for name, a in ModelRegistry.adapters().items() if ModelRegistry.is_available(a))


def test_workflow_passes_the_github_workflow_schema() -> None:
    result = check_jsonschema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("runs-on: ubuntu-latest", "run-on: ubuntu-latest"),  # a typo in a required key
        ("  workflow_dispatch:", "  workflow_dispatched:"),  # an event GitHub does not know
        ("fail-fast: false", "fail-fast: [false]"),  # a list where a boolean belongs
        ("permissions:", "permission:"),  # an unknown top-level key
    ],
)
def test_a_broken_copy_of_the_workflow_fails_the_schema(tmp_path: Path, original: str, broken: str) -> None:
    text = WORKFLOW.read_text()
    assert original in text
    copy = tmp_path / "conformance.yml"
    copy.write_text(text.replace(original, broken))
    result = check_jsonschema(copy)
    assert result.returncode != 0, f"check-jsonschema accepted {broken!r}:\n{result.stdout}"
    assert "Schema validation errors" in result.stdout


def test_the_matrix_command_lists_exactly_the_registered_families(tmp_path: Path) -> None:
    workflow = load_workflow()
    job_name, output_name = job_and_output_feeding_the_matrix(workflow)
    job = workflow["jobs"][job_name]
    match = STEP_OUTPUT.match(job["outputs"][output_name].strip())
    assert match, f"jobs.{job_name}.outputs.{output_name} is not a step output"
    step_id, step_output = match.groups()
    (step,) = [s for s in job["steps"] if s.get("id") == step_id]
    assert "python -m vlmforge families --json" in step["run"]
    written = run_step(step, tmp_path)
    assert json.loads(written[step_output]) == registered_families()
    assert registered_families()  # an empty matrix would make GitHub fail the workflow


def test_the_matrix_is_families_times_oldest_and_newest_transformers() -> None:
    workflow = load_workflow()
    job = workflow["jobs"]["conformance"]
    job_name, _ = job_and_output_feeding_the_matrix(workflow)
    assert job["needs"] == job_name or job_name in job["needs"]
    assert job["strategy"]["matrix"]["transformers"] == ["oldest", "newest"]
    assert job["strategy"]["fail-fast"] is False
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pytest --pyargs vlmforge.harness.suite --model tiny/${{ matrix.family }}" in runs
    assert '--conformance-report "$REPORT"' in runs and '>> "$GITHUB_STEP_SUMMARY"' in runs
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    (summary,) = [s for s in job["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert upload["if"] == summary["if"] == "always()"  # the report of a failing suite matters most
    for name, job in workflow["jobs"].items():
        (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert setup["with"]["cache"] == "pip", name


def test_the_transformers_range_comes_from_pyproject(tmp_path: Path) -> None:
    workflow = load_workflow()
    (step,) = [s for s in workflow["jobs"]["families"]["steps"] if s.get("id") == "transformers"]
    written = run_step(step, tmp_path)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d.replace(" ", "") for d in dependencies if re.match(r"transformers\s*[<>=!~]", d)]
    lower = re.search(r">=([\w.]+)", spec)
    assert lower is not None
    assert written == {"oldest": f"transformers=={lower.group(1)}", "newest": spec}


def test_the_real_checkpoints_job_is_manual_with_documented_inputs() -> None:
    workflow = load_workflow()
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"models", "dtype"}
    assert all(i.get("description") for i in inputs.values())
    assert inputs["models"]["default"] == "" and set(inputs["dtype"]["options"]) == set(DTYPES)
    job = workflow["jobs"]["real-checkpoints"]
    assert job["if"] == "github.event_name == 'workflow_dispatch'"
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "targets=(--all-models)" in runs and '--real --model-dtype "$DTYPE"' in runs
