"""The package's layering, read off its source: each layer imports only the layers below it.

    core  <-  adapters, tiny  <-  harness  <-  scaffold
    core  <-  analysis  <-  spectra (which may also import adapters)

Nothing below ``analysis`` / ``spectra`` imports them.

``vlmforge/__init__.py`` and ``vlmforge/__main__.py`` sit above every layer. A function-local import
of a vlmforge module hides an edge from a reader, so it is allowed only with a one-line reason on the
line before it (``# local import: <why>``): breaking a real cycle or deferring a heavy dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import vlmforge

PACKAGE = Path(vlmforge.__file__).parent

#: Which layers each layer may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "adapters": frozenset({"core", "adapters"}),
    "tiny": frozenset({"core", "tiny"}),
    "harness": frozenset({"core", "tiny", "harness"}),
    "scaffold": frozenset({"core", "tiny", "harness", "scaffold"}),
    "analysis": frozenset({"core", "analysis"}),
    "spectra": frozenset({"core", "adapters", "analysis", "spectra"}),
}
LOCAL_IMPORT_REASON = "# local import:"


@dataclass(frozen=True)
class Edge:
    source: Path
    line: int
    target: str  # dotted module imported
    local: bool  # inside a function body
    reason: str | None


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "vlmforge" and parts[1] in ALLOWED else None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[Edge]:
    """Every import of a vlmforge module in ``path`` (relative imports resolved)."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    local_nodes = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    edges: list[Edge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base]
        else:
            continue
        previous = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        reason = previous if previous.startswith(LOCAL_IMPORT_REASON) else None
        edges += [
            Edge(path, node.lineno, target, id(node) in local_nodes, reason)
            for target in targets
            if target == "vlmforge" or target.startswith("vlmforge.")
        ]
    return edges


def all_edges() -> list[Edge]:
    return [edge for path in sorted(PACKAGE.rglob("*.py")) for edge in imports_of(path)]


def test_the_walker_sees_the_package() -> None:
    edges = all_edges()
    sources = {layer_of(module_name(edge.source)) for edge in edges}
    assert {"core", "tiny", "harness", "scaffold", "adapters", "analysis", "spectra"} <= sources
    tiny_on_core = [
        e for e in edges if e.source.parent.name == "tiny" and e.target.startswith("vlmforge.core")
    ]
    assert tiny_on_core, "the tiny factory's registration with core was not seen"


def test_no_upward_imports() -> None:
    upward = []
    for edge in all_edges():
        source_layer = layer_of(module_name(edge.source))
        target_layer = layer_of(edge.target)
        if source_layer and target_layer and target_layer not in ALLOWED[source_layer]:
            upward.append(
                f"{edge.source.relative_to(PACKAGE.parent)}:{edge.line} ({source_layer}) imports "
                f"{edge.target} ({target_layer})"
            )
    layering = "core <- adapters, tiny <- harness <- scaffold; core <- analysis <- spectra"
    assert not upward, f"imports against the layering {layering}:\n" + "\n".join(upward)


def test_function_local_imports_say_why() -> None:
    unexplained = [
        f"{edge.source.relative_to(PACKAGE.parent)}:{edge.line} imports {edge.target} inside a function"
        for edge in all_edges()
        if edge.local and edge.reason is None
    ]
    assert not unexplained, (
        f"hoist these imports, or put '{LOCAL_IMPORT_REASON} <why>' on the line before:\n"
        + "\n".join(unexplained)
    )


@pytest.mark.parametrize(
    ("source", "expected_upward"),
    [
        ("from vlmforge.harness.checks import CHECKS\n", True),
        ("def f():\n    from vlmforge.tiny import build_tiny_model\n", True),
        ("from ..tiny import build_tiny_model\n", True),
        ("from vlmforge.core.spec import FamilySpec\n", False),
        ("from .errors import ContractError\n", False),
        ("from vlmforge.spectra import HookedVLM\n", True),
        ("from vlmforge.analysis.geometry import image_info\n", True),
    ],
)
def test_walker_flags_an_upward_edge_planted_in_core(source: str, expected_upward: bool) -> None:
    """The walker itself can fail: an import planted in a core module is classified correctly."""
    planted = PACKAGE / "core" / "_planted_for_layer_test.py"
    try:
        planted.write_text(source)
        [edge] = imports_of(planted)
        assert (layer_of(edge.target) not in ALLOWED["core"]) is expected_upward, edge
    finally:
        planted.unlink(missing_ok=True)
