"""The conformance matrix: model x check -> pass / fail / skip, with the measured difference."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYMBOLS = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}


@dataclass
class Cell:
    """One (model, check) result."""

    outcome: str  # passed | failed | skipped
    max_diff: float | None = None
    message: str = ""

    def short(self) -> str:
        text = SYMBOLS.get(self.outcome, self.outcome)
        if self.max_diff is not None:
            text += f" {self.max_diff:.1e}"
        return text


@dataclass
class ConformanceMatrix:
    """Results keyed by model then check.

    Rows and columns follow ``check_order`` / ``model_order`` when given (reports from parallel
    workers arrive in any order), then first-seen order.
    """

    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    check_order: list[str] = field(default_factory=list)
    model_order: list[str] = field(default_factory=list)

    def record(self, model: str, check: str, cell: Cell) -> None:
        row = self.cells.setdefault(model, {})
        # A test reports several phases (setup/call/teardown): once one failed, that is the result.
        if check not in row or row[check].outcome != "failed":
            row[check] = cell

    @property
    def checks(self) -> list[str]:
        seen: list[str] = []
        for row in self.cells.values():
            seen += [check for check in row if check not in seen]
        return _ordered(seen, self.check_order)

    @property
    def models(self) -> list[str]:
        return _ordered(list(self.cells), self.model_order)

    def failures(self) -> list[tuple[str, str, Cell]]:
        return self._with_outcome("failed")

    def skipped(self) -> list[tuple[str, str, Cell]]:
        """The (model, check, cell) skipped, each with its reason in ``cell.message``."""
        return self._with_outcome("skipped")

    def _with_outcome(self, outcome: str) -> list[tuple[str, str, Cell]]:
        return [
            (model, check, cell)
            for model, row in self.cells.items()
            for check, cell in row.items()
            if cell.outcome == outcome
        ]

    def to_markdown(self) -> str:
        models = self.models
        lines = ["| check | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for check in self.checks:
            row = [self.cells[m][check].short() if check in self.cells[m] else "" for m in models]
            lines.append(f"| {check} | " + " | ".join(row) + " |")
        failures = self.failures()
        if failures:
            lines += ["", "**Failures**", ""]
            lines += [
                f"- `{m}` / `{c}`: {cell.message.splitlines()[0] if cell.message else ''}"
                for m, c, cell in failures
            ]
        skipped = self.skipped()
        if skipped:
            lines += ["", "**Skipped**", ""]
            lines += [f"- `{m}` / `{c}`: {cell.message}" for m, c, cell in skipped]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        models = self.models
        width = max([len(c) for c in self.checks] + [5])
        columns = [max(len(m), 14) for m in models]
        lines = [" " * width + "  " + "  ".join(m.ljust(w) for m, w in zip(models, columns))]
        for check in self.checks:
            cells = [
                (self.cells[m][check].short() if check in self.cells[m] else "-").ljust(w)
                for m, w in zip(models, columns)
            ]
            lines.append(check.ljust(width) + "  " + "  ".join(cells))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            model: {check: asdict(cell) for check, cell in row.items()} for model, row in self.cells.items()
        }

    def write(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.md`` (the suffix of ``path`` is replaced)."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        md_path.write_text("# vlmforge conformance\n\n" + self.to_markdown())
        return json_path, md_path


def _ordered(names: list[str], order: list[str]) -> list[str]:
    """``names`` sorted by their position in ``order``; names not in it keep their order, last."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), names.index(name)))
