"""The family copier template: validators, TODO placement, lint cleanliness and the `copier update` flow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import copier
import pytest

from vlmforge.scaffold.cli import main
from vlmforge.scaffold.destinations import answers_relpath
from vlmforge.scaffold.generate import TEMPLATE_DIR, GenerationError, render_family

GIT = shutil.which("git")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # copier commits in scratch repositories during `update`; give git an identity that needs no config.
    for key, value in {
        "GIT_AUTHOR_NAME": "vlmforge tests",
        "GIT_AUTHOR_EMAIL": "tests@vlmforge.invalid",
        "GIT_COMMITTER_NAME": "vlmforge tests",
        "GIT_COMMITTER_EMAIL": "tests@vlmforge.invalid",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.skipif(GIT is None, reason="copier update needs git")
def test_copier_update_keeps_hand_edits_and_applies_template_change(
    tmp_path: Path, git_identity: None, researched, monkeypatch: pytest.MonkeyPatch
) -> None:
    # v1 of the template, in its own git repository (copier update needs a versioned template).
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE_DIR, template)
    _git(template, "init", "-q")
    _git(template, "add", "-A")
    _git(template, "commit", "-q", "-m", "template v1")
    _git(template, "tag", "v1")

    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q")
    monkeypatch.setattr("vlmforge.scaffold.cli.research", lambda source, **_: researched(source))
    (project / "vlmforge/adapters").mkdir(parents=True)  # the layout `copier update` re-renders into
    argv = ["llava", "--name", "my_llava", "--dest", str(project), "--template", str(template), "--force"]
    assert main(argv) == 0
    module = project / "vlmforge" / "adapters" / "my_llava.py"
    answers = project / answers_relpath("my_llava")
    assert "_commit: v1" in answers.read_text()
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "generated")

    # A hand edit in the generated module...
    hand_edit = "    # hand edit: kept across template updates\n"
    module.write_text(module.read_text().replace("    spec = SPEC\n", "    spec = SPEC\n" + hand_edit))
    _git(project, "commit", "-q", "-am", "hand edit")

    # ...and a template improvement released as v2.
    module_template = template / "template" / "vlmforge" / "adapters" / "{{ name }}.py.jinja"
    marker = "Template v2: adapters get this line."
    text = module_template.read_text()
    module_template.write_text(
        text.replace("(hand edits are merged).\n", f"(hand edits are merged).\n{marker}\n", 1)
    )
    _git(template, "commit", "-q", "-am", "template v2")
    _git(template, "tag", "v2")

    copier.run_update(
        str(project), answers_file=str(answers_relpath("my_llava")), defaults=True, overwrite=True, quiet=True
    )
    updated = module.read_text()
    assert hand_edit in updated, updated
    assert marker in updated, updated
    assert "_commit: v2" in answers.read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad-Name"}, "lowercase Python identifier"),
        ({"name": "class"}, "keyword"),
        ({"language_model": "model..text"}, "dotted path"),
        ({"aliases": {"short": "other/ckpt"}}, "not among the checkpoints"),
        ({"checkpoints": ["not a hub id"]}, "org/name"),
        ({"rotary_function": "apply_rotary_pos_emb"}, "importable dotted path"),
        ({"checkpoints": [], "tiny_reference": ""}, "tiny_reference"),
        ({"min_image_tokens": 0}, "whole number >= 1"),
    ],
)
def test_template_validators_reject_bad_answers(change: dict, message: str, researched) -> None:
    answers = researched("llava").copier_answers("llava_copy", checkpoints=["llava-hf/llava-1.5-7b-hf"])
    answers.update(change)
    with pytest.raises(GenerationError, match=message):
        render_family(answers)


def test_a_count_answer_is_rendered_as_an_int(researched, load_spec, tmp_path: Path) -> None:
    answers = researched("llava").copier_answers("llava_floor", checkpoints=["llava-hf/llava-1.5-7b-hf"])
    answers["min_image_tokens"] = 3
    rendered = render_family(answers)
    try:
        text = rendered.module.read_text()
        shutil.copy(rendered.module, tmp_path / "llava_floor.py")
    finally:
        rendered.cleanup()
    assert "    min_image_tokens=3,\n" in text
    assert load_spec(tmp_path / "llava_floor.py").min_image_tokens == 3
    # The default (no limit) is not written.
    default = render_family(researched("llava").copier_answers("llava_plain", checkpoints=["a/b"]))
    try:
        assert "min_image_tokens" not in default.module.read_text()
    finally:
        default.cleanup()


def test_unanswered_questions_become_todos_at_their_line(researched) -> None:
    # Without measurement the capability flags are open. transformers' default gemma3 config has no stored
    # chat template: the template conventions are left to the runtime (None), not TODOs.
    report = researched("gemma3", False)
    rendered = render_family(report.copier_answers("gemma3"))
    try:
        lines = rendered.module.read_text().splitlines()
    finally:
        rendered.cleanup()
    todo_owners = []
    for index, line in enumerate(lines):
        if "# TODO(vlmforge):" in line:
            following = next(t for t in lines[index + 1 :] if not t.lstrip().startswith("#"))
            todo_owners.append(following.strip().split("=")[0])
    assert not {"image_in_message", "continue_final_message"} & set(todo_owners), todo_owners
    assert set(todo_owners) >= {
        "contiguous_image_tokens",
        "supports_batching",
        "strict_residual_stream",
        "batches_mixed_image_sizes",
        "min_image_tokens",  # a count, rendered as an int literal under its TODO
    }, todo_owners


def test_custom_processor_is_rendered_only_when_needed(researched, load_spec, tmp_path: Path) -> None:
    answers = researched("llava").copier_answers("llava_custom", checkpoints=["llava-hf/llava-1.5-7b-hf"])
    answers["custom_processor"] = True
    answers["todos"] = {"processor": "the chat template renders no image placeholder"}
    rendered = render_family(answers)
    try:
        text = rendered.module.read_text()
        shutil.copy(rendered.module, tmp_path / "llava_custom.py")
    finally:
        rendered.cleanup()
    assert "class LlavaCustomProcessor(VLMProcessor):" in text
    assert "# TODO(vlmforge): the chat template renders no image placeholder" in text
    assert load_spec(tmp_path / "llava_custom.py").name == "llava_custom"
    plain = render_family(researched("llava").copier_answers("llava_plain", checkpoints=["a/b"]))
    try:
        assert "Processor" not in plain.module.read_text().split("SPEC = ")[0].split("import")[-1]
        assert "VLMProcessor" not in plain.module.read_text()
    finally:
        plain.cleanup()


RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_generated_modules_are_ruff_clean(researched, tmp_path: Path) -> None:
    ruff = str(RUFF)
    many = [f"org/checkpoint-{i}" for i in range(6)]
    cases = {
        "qwen3_vl_gen": researched("qwen3_vl").copier_answers(
            "qwen3_vl_gen", checkpoints=many, aliases={f"alias-{i}": c for i, c in enumerate(many)}
        ),
        "gemma3_gen": researched("gemma3", False).copier_answers(
            "gemma3_gen", notes='quote " and \\ backslash'
        ),
    }
    cases["custom_gen"] = {
        **cases["qwen3_vl_gen"],
        "name": "custom_gen",
        "custom_processor": True,
        "todos": {"processor": "x " * 80},
    }
    for name, answers in cases.items():
        rendered = render_family(answers)
        try:
            shutil.copy(rendered.module, tmp_path / f"{name}.py")
        finally:
            rendered.cleanup()
    lint = [ruff, "check", "--no-cache", "--line-length", "110", "--select", "E,F,W,I,UP,B,SIM,RUF"]
    # The template wraps lines the way ruff format does, so a generated module is also format-clean.
    form = [ruff, "format", "--no-cache", "--check", "--diff", "--line-length", "110"]
    for command in (lint, form):
        result = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_processor_todo_without_a_subclass_sits_above_the_spec(researched) -> None:
    answers = researched("llava").copier_answers("llava_noproc", checkpoints=["llava-hf/llava-1.5-7b-hf"])
    answers["todos"] = {"processor": "no processor could be built: check the prompt format by hand"}
    rendered = render_family(answers)
    try:
        text = rendered.module.read_text()
    finally:
        rendered.cleanup()
    assert (
        "# TODO(vlmforge): no processor could be built: check the prompt format by hand\nSPEC = FamilySpec("
        in text
    )


def test_interactive_mode_offers_research_answers_as_defaults(
    monkeypatch: pytest.MonkeyPatch, researched
) -> None:
    seen: dict = {}

    def fake_run_copy(src, dst, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # the user aborts the questionnaire

    monkeypatch.setattr(copier, "run_copy", fake_run_copy)
    answers = researched("llava").copier_answers("llava", checkpoints=["llava-hf/llava-1.5-7b-hf"])
    with pytest.raises(KeyboardInterrupt):
        render_family(answers, interactive=True)
    assert seen["user_defaults"] == answers and seen["defaults"] is False and "data" not in seen


@pytest.mark.skipif(GIT is None, reason="copier update needs git")
def test_scaffolding_from_this_checkout_records_a_versioned_template_for_copier_update(
    tmp_path: Path,
) -> None:
    """From a git checkout the answers file names the checkout and a commit, so `copier update` can run."""
    import subprocess

    import copier
    import yaml

    from vlmforge.scaffold import generate
    from vlmforge.scaffold.cli import main

    # A clean clone stands in for a user's checkout (this one may carry uncommitted edits).
    checkout = tmp_path / "vlmforge-checkout"
    subprocess.run(["git", "clone", "-q", str(Path(generate.__file__).parents[2]), str(checkout)], check=True)
    assert generate.default_template(checkout) == (str(checkout), "HEAD")
    (checkout / "vlmforge/templates/family/copier.yml").write_text("# uncommitted edit\n", "utf-8")
    assert generate.default_template(checkout) == (str(generate.TEMPLATE_DIR), None), "dirty: use the package"
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", "--", "."], check=True)

    dest = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    (dest / "vlmforge/adapters").mkdir(parents=True)  # the layout `copier update` re-renders into
    assert main(["llava", "--name", "llava_copy", "--dest", str(dest), "--template", str(checkout),
                 "--vcs-ref", "HEAD", "--force"]) == 0  # fmt: skip
    tmp_path = dest
    answers_file = tmp_path / "vlmforge/adapters/.copier-answers.llava_copy.yml"
    answers = yaml.safe_load(answers_file.read_text())
    assert answers["_src_path"] == str(checkout) and answers["_commit"]
    module = tmp_path / "vlmforge/adapters/llava_copy.py"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "scaffold"], check=True)
    module.write_text(module.read_text() + "\n# hand edit: keep me\n")
    subprocess.run([*git, "commit", "-qam", "hand edit"], check=True)
    copier.run_update(str(tmp_path), answers_file=str(answers_file.relative_to(tmp_path)), defaults=True,
                      overwrite=True, quiet=True, vcs_ref="HEAD")  # fmt: skip
    assert "# hand edit: keep me" in module.read_text()
    assert 'name="llava_copy"' in module.read_text()
