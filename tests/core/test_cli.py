"""``python -m vlmforge``: the listing and the demo a newcomer runs first; the CI matrix's families."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlmforge.__main__ import main
from vlmforge.core.registry import ModelRegistry

ADAPTERS = Path(__file__).resolve().parents[2] / "vlmforge" / "adapters"


def test_list_shows_families_checkpoints_aliases_and_tiny_names(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct", "alias: qwen3-vl-8b", "tiny/smolvlm",
                 "contiguous_image_tokens=False"):  # fmt: skip
        assert text in out


def test_demo_runs_offline_on_a_tiny_model(capsys):
    assert main(["demo", "tiny/smolvlm", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "20 image tokens" in out and "cache['lm.blocks.0.attn.hook_pattern']: (1, 6," in out


def test_demo_unknown_model_is_a_clear_error(capsys):
    assert main(["demo", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def registered_available_families() -> list[str]:
    return sorted(n for n, a in ModelRegistry.adapters().items() if ModelRegistry.is_available(a))


def test_families_json_is_the_sorted_registered_families(capsys):
    assert main(["families", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line: `echo "families=$(...)" >> $GITHUB_OUTPUT` in CI
    assert json.loads(out) == registered_available_families()
    assert {"llava", "smolvlm", "qwen2_5_vl", "qwen3_vl"} <= set(json.loads(out))


def test_families_without_json_prints_one_per_line(capsys):
    assert main(["families"]) == 0
    assert capsys.readouterr().out.splitlines() == registered_available_families()


def test_families_leaves_out_families_this_transformers_lacks(capsys, monkeypatch):
    monkeypatch.setattr(ModelRegistry, "is_available", classmethod(lambda cls, a: a.spec.name != "llava"))
    assert main(["families", "--json"]) == 0
    assert "llava" not in json.loads(capsys.readouterr().out)


def test_families_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["families", "--jsn"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --jsn" in capsys.readouterr().err


def test_readme_family_table_is_the_registrys() -> None:
    """The README's family table is exactly what `python -m vlmforge families --markdown` prints.

    Run as a user runs it, in a fresh interpreter: families a test registered in this process do not count.
    """
    command = [sys.executable, "-m", "vlmforge", "families", "--markdown"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout.rstrip("\n")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"<!-- family table: .*? -->\n(.*?)\n<!-- end of family table -->", readme, re.S)
    assert match, "README has no generated family table block"
    stale = "README's family table is stale: paste the output of `python -m vlmforge families --markdown`"
    assert match.group(1) == printed, stale
    shipped = sorted(path.stem for path in ADAPTERS.glob("*.py") if not path.stem.startswith("_"))
    assert [row.split("`")[1] for row in printed.splitlines()[2:]] == shipped  # a row per family module
