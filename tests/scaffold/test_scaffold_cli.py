"""``scaffold-new-model``: happy paths, atomic writes, and every bad input giving a clear exit-2 message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vlmforge.scaffold import cli, install
from vlmforge.scaffold.cli import default_dest, main
from vlmforge.scaffold.errors import EXIT_BAD_INPUT, EXIT_VERIFY_FAILED
from vlmforge.scaffold.generate import TEMPLATE_DIR
from vlmforge.tiny.reference import reference_entry

REPO_ADAPTERS = Path(__file__).resolve().parents[2] / "vlmforge" / "adapters"


@pytest.fixture
def fast_research(monkeypatch: pytest.MonkeyPatch, researched) -> None:
    """Serve the CLI memoized research (the CLI logic, not research, is under test here)."""
    monkeypatch.setattr(cli, "research", lambda source, **_: researched(source))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("scaffold-new-model: error: ")
    return err


# ------------------------------------------------------------------------------------------ happy paths
def test_dry_run_prints_research_and_files_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_research: None
) -> None:
    assert main(["llava", "--dest", str(tmp_path / "new"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# Research report: `llava`" in out
    assert "model.model.language_model.layers is a ModuleList of" in out
    assert f"--- would write {tmp_path / 'new/vlmforge_adapters/llava.py'}" in out
    assert '@ModelRegistry.register("llava")' in out
    assert "a real run would refuse without --force" in out  # the installed llava family
    assert list(tmp_path.iterdir()) == []


def test_writes_module_answers_and_report(tmp_path: Path, capsys, fast_research: None, load_spec) -> None:
    report, answers_data = tmp_path / "research.md", tmp_path / "answers.yml"
    dest = tmp_path / "project"  # does not exist yet: created as a new project
    argv = [
        "--force",  # the installed llava family already handles this checkpoint and model_type
        "llava-hf/llava-1.5-7b-hf",
        "--name",
        "llava15",
        "--dest",
        str(dest),
        "--report",
        str(report),
        "--answers",
        str(answers_data),
        "--checkpoint",
        "llava-hf/llava-1.5-13b-hf",
        "--alias",
        "l7",
        "--alias",
        "l13=llava-hf/llava-1.5-13b-hf",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote " + str(dest / "vlmforge_adapters/llava15.py") in out
    assert '  llava15 = "vlmforge_adapters.llava15"' in out  # the entry point to add
    assert (dest / "vlmforge_adapters/__init__.py").is_file()
    spec = load_spec(dest / "vlmforge_adapters/llava15.py")
    assert spec.checkpoints == ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf")
    assert dict(spec.aliases) == {"l7": "llava-hf/llava-1.5-7b-hf", "l13": "llava-hf/llava-1.5-13b-hf"}
    assert spec.tiny_reference is None  # the first checkpoint is a stored reference: it is the tiny reference
    assert "| HF model class | `LlavaForConditionalGeneration` |" in report.read_text()
    data = yaml.safe_load(answers_data.read_text())
    assert data["name"] == "llava15" and data["language_model"] == "model.language_model"
    answers = (dest / "vlmforge_adapters/.copier-answers.llava15.yml").read_text()
    assert "name: llava15" in answers and "_src_path:" in answers


def test_local_checkpoint_dir_gets_a_rebuildable_tiny_reference(tmp_path: Path, capsys, load_spec) -> None:
    checkpoint = tmp_path / "my-llava"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(reference_entry("llava-hf/llava-1.5-7b-hf")["config"]))
    dest = tmp_path / "project"
    assert main([str(checkpoint), "--name", "my_llava", "--dest", str(dest), "--force"]) == 0
    spec = load_spec(dest / "vlmforge_adapters/my_llava.py")
    assert spec.checkpoints == ()
    # build_tiny_model takes stored ids, model_types and configs; a directory falls back to its model_type.
    from vlmforge.tiny import build_tiny_model

    assert spec.tiny_reference in (str(checkpoint.resolve()), "llava")
    assert type(build_tiny_model(spec.tiny_reference).model).__name__ == spec.model_class


def test_force_overwrites_an_existing_family(tmp_path: Path, capsys, fast_research: None) -> None:
    module = tmp_path / "vlmforge/adapters/llava.py"
    module.parent.mkdir(parents=True)
    module.write_text("# an older llava module\n")
    assert main(["llava", "--dest", str(tmp_path), "--force"]) == 0
    assert '@ModelRegistry.register("llava")' in module.read_text()


def test_default_dest_is_this_project() -> None:
    assert (default_dest() / "vlmforge" / "adapters").resolve() == REPO_ADAPTERS.resolve()


def test_verify_runs_the_conformance_suite_and_maps_failure(
    tmp_path: Path, capsys, fast_research: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_run = subprocess.run

    def fake_run(command, **kwargs):
        if command[0] == "git":  # the template-source check, not the conformance run
            return real_run(command, **kwargs)
        calls.append(command)
        report = Path(command[command.index("--conformance-report") + 1])
        report.with_suffix(".md").write_text(
            "| check | tiny/llava |\n|---|---|\n| contract_accessors | FAIL |\n"
        )
        return subprocess.CompletedProcess(command, 1, "", "")

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    dest = tmp_path / "project"
    assert main(["llava", "--dest", str(dest), "--verify", "--force"]) == EXIT_VERIFY_FAILED
    out = capsys.readouterr().out
    assert "| contract_accessors | FAIL |" in out and "conformance: FAILED" in out
    command = calls[0]
    assert command[1:5] == ["-m", "pytest", "--pyargs", "vlmforge.harness.suite"]
    assert command[command.index("--model") + 1] == "tiny/llava"
    assert command[command.index("--adapter-module") + 1] == str(dest / "vlmforge_adapters/llava.py")


# -------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["someorg/not-cached-anywhere"], ["not in the local Hugging Face cache", "local directory"]),
        (["llama"], ["not an image+text decoder VLM", "text-only"]),
        (["t5"], ["encoder-decoder"]),
        (["brand_new_vlm_type"], ["installed transformers 5."]),
        (["llava", "--name", "Not-An-Identifier"], ["not a valid family id"]),
        (["llava", "--name", "class"], ["not a valid family id"]),
        (["./no/such/checkpoint"], ["no such directory"]),
        (["llava", "--alias", "lv"], ["needs a checkpoint to point at"]),
        (["llava", "--checkpoint", "a/b", "--alias", "x=c/d"], ["not one of the family's checkpoints"]),
        (["llava", "--interactive"], ["needs a terminal"]),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(
    argv: list[str], expected: list[str], tmp_path: Path, capsys, fast_research: None
) -> None:
    assert main([*argv, "--dest", str(tmp_path / "new")]) == EXIT_BAD_INPUT
    message = _error(capsys)
    for text in expected:
        assert text in message, message
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_type_in_a_checkpoint_dir_names_the_transformers_version(
    tmp_path: Path, capsys
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "brand_new_vlm"}))
    assert main([str(tmp_path), "--dry-run"]) == EXIT_BAD_INPUT
    message = _error(capsys)
    assert "'brand_new_vlm'" in message and "installed transformers 5." in message


def test_remote_code_is_never_run_without_the_flag(tmp_path: Path, capsys) -> None:
    config = {"model_type": "custom_vlm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    assert main([str(tmp_path), "--dry-run"]) == EXIT_BAD_INPUT
    assert "--trust-remote-code" in _error(capsys)


def test_existing_family_is_refused_and_named(tmp_path: Path, capsys, fast_research: None) -> None:
    adapters = tmp_path / "vlmforge/adapters"
    adapters.mkdir(parents=True)
    shutil.copy(REPO_ADAPTERS / "llava.py", adapters / "llava.py")
    shutil.copy(REPO_ADAPTERS / "smolvlm.py", adapters / "smolvlm.py")
    before = _snapshot(tmp_path)
    # Same file name (known before research, via --name) ...
    assert main(["llava", "--name", "llava", "--dest", str(tmp_path)]) == EXIT_BAD_INPUT
    assert str(adapters / "llava.py") in _error(capsys)
    # ... and a family under another name already handling the model_type.
    assert main(["idefics3", "--dest", str(tmp_path)]) == EXIT_BAD_INPUT
    message = _error(capsys)
    assert str(adapters / "smolvlm.py") in message and "idefics3" in message and "--force" in message
    assert _snapshot(tmp_path) == before


def test_failed_validation_leaves_dest_unchanged(tmp_path: Path, capsys, fast_research: None) -> None:
    # A template whose module does not import: rendering succeeds, validation must stop the install.
    broken = tmp_path / "broken-template"
    shutil.copytree(TEMPLATE_DIR, broken)
    module_template = broken / "template/vlmforge/adapters/{{ name }}.py.jinja"
    module_template.write_text(module_template.read_text() + "\nraise RuntimeError('broken template')\n")
    dest = tmp_path / "project"
    (dest / "vlmforge/adapters").mkdir(parents=True)
    (dest / "vlmforge/adapters/keep.py").write_text("# untouched\n")
    before = _snapshot(dest)
    assert main(["llava", "--dest", str(dest), "--template", str(broken), "--force"]) == EXIT_BAD_INPUT
    assert "does not import" in _error(capsys)
    assert _snapshot(dest) == before


def test_read_only_dest_is_a_clear_error(
    tmp_path: Path, capsys, fast_research: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "project"
    (dest / "vlmforge/adapters").mkdir(parents=True)
    (dest / "vlmforge/adapters").chmod(0o555)
    try:
        if os.access(dest / "vlmforge/adapters", os.W_OK):  # root ignores permissions: simulate EACCES

            def denied(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(install, "_write_new", denied)
        assert main(["llava", "--dest", str(dest), "--force"]) == EXIT_BAD_INPUT
        message = _error(capsys)
        assert "cannot write into" in message and "Permission denied" in message and "--dest" in message
        assert list((dest / "vlmforge/adapters").iterdir()) == []
    finally:
        (dest / "vlmforge/adapters").chmod(0o755)


def test_dest_parent_must_exist(tmp_path: Path, capsys) -> None:
    assert main(["llava", "--dest", str(tmp_path / "missing" / "project")]) == EXIT_BAD_INPUT
    assert "does not exist" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["aria", "llava"])
def test_printed_todo_counts_equal_the_todos_written(
    source: str, tmp_path: Path, capsys, fast_research: None
) -> None:
    """The research summary and the "Next:" line count exactly the TODO comments in the written module."""
    dest = tmp_path / "project"
    # --force: llava's model_type and checkpoints belong to the shipped family already.
    assert main([source, "--name", f"{source}_counted", "--dest", str(dest), "--force"]) == 0
    out = capsys.readouterr().out
    written = (dest / "vlmforge_adapters" / f"{source}_counted.py").read_text().count("# TODO(vlmforge):")
    summary = next(line for line in out.splitlines() if line.startswith("Researched "))
    assert f"open: {written} TODO(vlmforge) comment(s) in the module" in summary, (summary, written)
    assert f"Next: resolve the {written} TODO(vlmforge) comment(s)" in out, out
    if source == "aria":  # a source with open answers, so the equality is not 0 == 0
        assert written > 0
