"""The README's main-job command, exactly as written, on a machine without any earlier run's folders.

The pip-install half of the command cannot be re-run inside the test suite; the scaffold half runs
verbatim through the installed ``scaffold-new-model`` entry point of this environment, in a fresh
temporary HOME (so ``~`` and any state under it are new), from the repository root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def main_job_command() -> tuple[str, str]:
    """``(whole line, scaffold part)`` of the README's first bash block."""
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None, "README has no ```bash block"
    line = block.group(1).strip()
    scaffold = line[line.index("scaffold-new-model") :]
    return line, scaffold


def test_readme_set_up_commands_need_no_existing_folder() -> None:
    line, scaffold = main_job_command()
    assert line.startswith("python3.11 -m venv .venv && . .venv/bin/activate && pip install ")
    assert "--verify" in scaffold and "/tmp/" not in scaffold  # nothing shared between runs or users
    assert "```bash\npython -m pytest -n 2\n```" in README


def test_readme_main_job_command_runs_verbatim_in_a_fresh_home(tmp_path: Path) -> None:
    _, scaffold = main_job_command()
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "HOME": str(home), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(
        ["bash", "-c", scaffold], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "conformance: passed" in output and "| attention_vs_eager | pass 0.0e+00 |" in output
    written = [p.relative_to(home) for p in home.rglob("*.py")]
    assert len(written) == 2 and all("vlmforge_adapters" in str(p) for p in written), written
    assert "Traceback" not in output
