"""The scaffolder and a transformers release that cannot run the family (``versions.BROKEN_FORWARDS``), and
research standing in a stored real config for a default config whose tiny model cannot run an image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vlmforge.core.versions import BROKEN_FORWARDS, TRANSFORMERS_VERSION, BrokenForward
from vlmforge.scaffold import cli
from vlmforge.scaffold.cli import main
from vlmforge.scaffold.errors import EXIT_BAD_INPUT
from vlmforge.scaffold.report import ResearchReport

SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


def test_scaffolding_on_a_broken_release_stops_before_writing(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, researched: Callable[..., ResearchReport]
) -> None:
    """Simulated on the running release; on 5.24 the real fact gives the same refusal."""
    fact = BrokenForward(
        releases=(TRANSFORMERS_VERSION,), defect="simulated defect D", works_on="9.98 or 9.99"
    )
    monkeypatch.setitem(BROKEN_FORWARDS, "Llama4ForConditionalGeneration", fact)
    monkeypatch.setattr(cli, "research", lambda source, **_: researched(source))
    dest = tmp_path / "project"  # a new project: created only once something is written
    argv = ["llama4", "--name", "llama4_new", "--dest", str(dest), "--verify", "--checkpoint", SCOUT]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("scaffold-new-model: error: ")
    assert "Llama4ForConditionalGeneration cannot run on the installed transformers" in err
    assert "simulated defect D" in err and "9.98 or 9.99" in err and "nothing was written" in err
    assert list(tmp_path.rglob("*")) == []


def test_research_stands_in_the_stored_config_when_the_default_cannot_run_an_image(
    researched: Callable[..., ResearchReport],
) -> None:
    """transformers' default llama4 config feeds 7680-wide features to a 4096-wide projector: measured on
    the tiny model, the stored Scout config replaces it (its tiny model is what `tiny/llama4` builds)."""
    report = researched("llama4")
    assert report.source.kind == "reference" and report.source.checkpoint == SCOUT
    assert "cannot run an image" in report.source.description
    assert report.value("tiny_reference") == SCOUT
    # Without a tiny model nothing is measured, so nothing is replaced.
    assert researched("llama4", measure=False).source.kind == "model_type"
