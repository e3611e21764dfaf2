"""Wall time of the tiny conformance matrix: every registered family, in parallel across cores.

    python benchmarks/bench_matrix.py [--workers 2] [--json benchmarks/results/matrix.json]

Runs the README's local CI-matrix command, unchanged except for the worker count and where the report
goes (a temporary directory, which is also the working directory, as "anywhere" in the README):

    pytest --pyargs vlmforge.harness.suite --all-models -n 2 --conformance-report report

and reports the wall time of the whole command (interpreter start, collection, tiny-model builds and
every check) against the target of <= 120 s on 2 cores, with the matrix's pass/fail/skip counts per
family read back from ``report.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "matrix.json"
TARGET_SECONDS = 120.0


def pytest_command(workers: str) -> list[str]:
    """The README's command; ``pytest`` from this interpreter's environment."""
    executable = Path(sys.executable).parent / "pytest"
    pytest = [str(executable)] if executable.exists() else [shutil.which("pytest") or "pytest"]
    return [*pytest, "--pyargs", "vlmforge.harness.suite", "--all-models", "-n", workers]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="2", help="pytest-xdist -n value (the target is for 2)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vlmforge-matrix-") as folder:
        command = [*pytest_command(args.workers), "--conformance-report", "report"]
        load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=args.timeout)
        seconds = time.perf_counter() - started
        report_path = Path(folder) / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}

    counts: dict[str, dict[str, int]] = {}
    for model, row in report.items():
        counts[model] = dict(collections.Counter(cell.get("outcome", "?") for cell in row.values()))
    summary = next((line for line in reversed(completed.stdout.splitlines()) if line.startswith("=")), "")
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "command": " ".join(["pytest", *command[1:]]),
        "workers": args.workers,
        "wall_s": seconds,
        "target_s": TARGET_SECONDS,
        "within_target": seconds <= TARGET_SECONDS,
        "exit_code": completed.returncode,
        "pytest_summary": summary.strip("= "),
        "matrix": counts,
    }
    print(f"$ {result['command']}")
    print(f"exit {completed.returncode}: {result['pytest_summary']}")
    for model, outcome in counts.items():
        print(f"  {model}: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.items())))
    verdict = "ok" if result["within_target"] else "OVER"
    print(
        f"wall {seconds:.1f} s with -n {args.workers} "
        f"(target <= {TARGET_SECONDS:.0f} s on 2 cores): {verdict}"
    )
    if completed.returncode != 0:
        print(completed.stdout[-3000:])
        print(completed.stderr[-2000:], file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
