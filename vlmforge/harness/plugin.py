"""vlmforge's pytest plugin: run the conformance suite against any model and report a matrix.

Registered through the ``pytest11`` entry point, so every project that installs vlmforge has it::

    pytest tests/acceptance --model llava-7b -v          # in this repository
    pytest --pyargs vlmforge.harness.suite --all-models  # anywhere
    pytest --pyargs vlmforge.harness.suite --model ./my-checkpoint --adapter-module my_family.py

Without ``--model`` the suite runs on the tiny model of every registered family. The plugin
parametrizes the suite over the models under test and over the check registry, so a check
registered in a ``conftest.py`` or a module loaded with ``-p`` runs too (see
:mod:`vlmforge.harness.checks.registry`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from vlmforge.core.errors import (
    AdapterDiscoveryError,
    CheckpointLoadError,
    DeviceError,
    UnknownModelError,
    UnsupportedArchitectureError,
    UnsupportedReleaseError,
)
from vlmforge.core.registry import TINY_PREFIX, ModelRegistry
from vlmforge.core.runtime import HookedVLM, resolve_device
from vlmforge.core.versions import broken_forward
from vlmforge.harness.checks import CHECKS, Check, missing_capability
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.report import Cell, ConformanceMatrix

MODEL_FIXTURE = "conformance_model"
CHECK_PARAM = "conformance_check"
SESSION_KEY = pytest.StashKey["ConformanceSession"]()
DTYPES = ("float32", "bfloat16", "float16")
TARGETS_KEY = pytest.StashKey[list["Target"]]()


@dataclass(frozen=True)
class Target:
    """A model to run the suite on, or the reason it cannot be (skipped at collection).

    ``release_defect`` marks a registered family the installed transformers release cannot run
    (:data:`vlmforge.core.versions.BROKEN_FORWARDS`): its cells are skipped with the reason, and unlike a
    model that is no VLM, a session that tests nothing else for it is not failed for it.
    """

    name: str
    skip_reason: str | None = None
    release_defect: bool = False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vlmforge", "vlmforge conformance harness")
    group.addoption(
        "--model",
        action="append",
        default=[],
        dest="vlmforge_models",
        metavar="NAME",
        help="model to test: alias, hub id, local checkpoint dir or tiny/<family> (repeatable)",
    )
    group.addoption(
        "--all-models",
        action="store_true",
        dest="vlmforge_all",
        help="test every registered family (tiny models unless --real)",
    )
    group.addoption(
        "--tiny",
        action="store_true",
        dest="vlmforge_tiny",
        help="load registered families as tiny random models (default for --all-models)",
    )
    group.addoption(
        "--real",
        action="store_true",
        dest="vlmforge_real",
        help="load registered families from their real checkpoints (needs the weights)",
    )
    group.addoption(
        "--model-dtype",
        default=None,
        dest="vlmforge_dtype",
        metavar="DTYPE",
        help="dtype for real checkpoints: float32, bfloat16 or float16 (default: bf16 on GPU)",
    )
    group.addoption(
        "--model-device",
        default="auto",
        dest="vlmforge_device",
        metavar="DEVICE",
        help="device for the models under test (default: auto)",
    )
    group.addoption(
        "--adapter-module",
        action="append",
        default=[],
        dest="vlmforge_adapter_modules",
        metavar="PATH",
        help="extra adapter module to register (file path or dotted name)",
    )
    group.addoption(
        "--conformance-report",
        default=None,
        dest="vlmforge_report",
        metavar="PATH",
        help="write the conformance matrix to PATH.json and PATH.md",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_capability(name): skip unless the adapter declares it")
    config.addinivalue_line(
        "markers",
        "not_applicable(predicate): skip as 'not applicable: <reason>' where predicate(vlm) gives a reason",
    )
    # Every option is checked before any model loads: a bad one is one usage error, not N failed tests
    # or, for the report path, a traceback after hours of real-weights checks.
    check_model_options(config)
    check_report_path(config.getoption("vlmforge_report"))
    for module in config.getoption("vlmforge_adapter_modules"):
        load_adapter_module(module)
    config.stash[TARGETS_KEY] = select_targets(config)
    session = ConformanceSession(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "vlmforge-conformance-session")


def check_model_options(config: pytest.Config) -> None:
    """``--model-dtype`` / ``--model-device``: one usage error listing the valid values."""
    dtype = config.getoption("vlmforge_dtype")
    if dtype is not None and dtype not in DTYPES:
        raise pytest.UsageError(f"--model-dtype {dtype!r} is not one of: {', '.join(DTYPES)}")
    try:
        resolve_device(config.getoption("vlmforge_device"))
    except DeviceError as error:
        raise pytest.UsageError(f"--model-device: {error}") from None


def check_report_path(path: str | None) -> None:
    """Refuse a ``--conformance-report`` path whose PATH.json / PATH.md cannot be written."""
    if not path:
        return
    base = Path(path).expanduser().absolute()
    folder = next(d for d in (base.parent, *base.parent.parents) if d.exists())  # the report creates the rest
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise pytest.UsageError(
            f"--conformance-report {path}: cannot create files under {folder} (not a writable folder); "
            "pick a path you can write to"
        )
    for target in (base.with_suffix(".json"), base.with_suffix(".md")):
        writable = os.access(target, os.W_OK) if target.exists() else True
        if target.is_dir() or not writable:
            raise pytest.UsageError(
                f"--conformance-report {path}: cannot write {target} (a folder or not writable); "
                "pick a path you can write to"
            )


def load_adapter_module(module: str) -> None:
    """Import an adapter module by file path or dotted name; it must register at least one family."""
    ModelRegistry.adapters()  # discover the installed families first, so the module's are told apart
    try:
        if module.endswith(".py"):
            imported = ModelRegistry.import_adapter_file(module)
        else:
            imported = ModelRegistry.import_adapter_module(module)
    except (AdapterDiscoveryError, ValueError, TypeError) as error:
        raise pytest.UsageError(f"--adapter-module {module}: {error}") from None
    if not any(adapter.__module__ == imported.__name__ for adapter in ModelRegistry.adapters().values()):
        raise pytest.UsageError(
            f"--adapter-module {module} registered no family: it must define a ModelAdapter subclass "
            "decorated with @ModelRegistry.register(<name>) (scaffold-new-model writes one)"
        )


def select_targets(config: pytest.Config) -> list[Target]:
    """Turn --model / --all-models / --tiny / --real into the list of models under test."""
    real = config.getoption("vlmforge_real")
    tiny = config.getoption("vlmforge_tiny")
    if real and tiny:
        raise pytest.UsageError("--tiny and --real are mutually exclusive")
    requested: list[str] = list(config.getoption("vlmforge_models"))
    if config.getoption("vlmforge_all") or not requested:
        for name, adapter in sorted(ModelRegistry.adapters().items()):
            # A family this release of transformers cannot run stays in, so that its cells say why (resolving
            # it below marks it); a family whose class this release lacks is no family of this release.
            if ModelRegistry.is_available(adapter) or broken_forward(adapter.spec.model_class) is not None:
                requested.append((adapter.spec.reference_checkpoint or name) if real else TINY_PREFIX + name)
    targets: list[Target] = []
    for name in requested:
        try:
            resolution = ModelRegistry.resolve(name)
        except (UnknownModelError, CheckpointLoadError) as error:
            raise pytest.UsageError(f"--model {name}: {error}") from None
        except UnsupportedReleaseError as error:
            if name not in [t.name for t in targets]:
                targets.append(Target(name, skip_reason=error.reason, release_defect=True))
            continue
        except UnsupportedArchitectureError as error:
            targets.append(Target(name, skip_reason=f"not a supported image+text VLM: {error}"))
            continue
        if tiny and resolution.source != "tiny":
            name = TINY_PREFIX + resolution.family
        if name not in [t.name for t in targets]:
            targets.append(Target(name))
    return targets


def pytest_report_header(config: pytest.Config) -> str:
    targets = config.stash.get(TARGETS_KEY, [])
    return "vlmforge models under test: " + (", ".join(t.name for t in targets) or "none")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the suite over the models under test and, for ``test_check``, the check registry."""
    if MODEL_FIXTURE in metafunc.fixturenames:
        targets = metafunc.config.stash[TARGETS_KEY]
        params = [
            pytest.param(
                t.name, id=t.name, marks=[pytest.mark.skip(reason=t.skip_reason)] if t.skip_reason else []
            )
            for t in targets
        ]
        metafunc.parametrize(MODEL_FIXTURE, params, scope="session")
    if CHECK_PARAM in metafunc.fixturenames:
        metafunc.parametrize(CHECK_PARAM, list(CHECKS.values()), ids=list(CHECKS))


class ConformanceSession:
    """Per-session state, registered as a plugin object: loaded models and the conformance matrix."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.matrix = ConformanceMatrix(
            check_order=list(CHECKS), model_order=[t.name for t in config.stash[TARGETS_KEY]]
        )
        self._models: dict[str, Any] = {}

    def model(self, name: str) -> Any:
        """The HookedVLM for ``name``, loaded once; a load failure fails every test that needs it."""
        if name not in self._models:
            dtype = self.config.getoption("vlmforge_dtype")
            try:
                self._models[name] = HookedVLM.from_pretrained(
                    name,
                    device=self.config.getoption("vlmforge_device"),
                    dtype=getattr(torch, dtype) if dtype else None,
                )
            except Exception as error:
                self._models[name] = error
        value = self._models[name]
        if isinstance(value, Exception):
            pytest.fail(f"could not load {name}: {type(value).__name__}: {value}", pytrace=False)
        return value

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Skip a test, with the reason, where its model cannot run it.

        That is a required capability declared False, or a check (or a suite test's ``not_applicable``
        marker) that does not apply to the model: the matrix then shows the cell as skipped with the
        reason, never as a silent pass.
        """
        params = item.callspec.params if hasattr(item, "callspec") else {}
        capabilities = [marker.args[0] for marker in item.iter_markers("requires_capability")]
        predicates = [marker.args[0] for marker in item.iter_markers("not_applicable")]
        check: Check | None = params.get(CHECK_PARAM)
        if MODEL_FIXTURE not in params or not (capabilities or predicates or check):
            return
        model = self.model(params[MODEL_FIXTURE])
        reasons = [missing_capability(model, capability) for capability in capabilities]
        reasons += [f"not applicable: {reason}" for predicate in predicates if (reason := predicate(model))]
        if check is not None:
            reasons.append(check.skip_reason(model))
        reason = next((reason for reason in reasons if reason), None)
        if reason is not None:
            pytest.skip(reason)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and isinstance(call.excinfo.value, CheckFailure):
            report.user_properties.append(("max_diff", call.excinfo.value.max_diff))
        if hasattr(item, "callspec") and MODEL_FIXTURE in item.callspec.params:
            report.user_properties.append(("vlmforge_model", item.callspec.params[MODEL_FIXTURE]))
            report.user_properties.append(("vlmforge_check", matrix_row(item)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Under xdist this runs in the controller too, with user_properties carried over.
        properties = dict(report.user_properties)
        if "vlmforge_model" not in properties:
            return
        if report.when != "call" and not (report.failed or report.skipped):
            return
        message = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = str(crash.message) if crash is not None else str(report.longrepr)
        elif report.skipped and isinstance(report.longrepr, tuple):
            message = report.longrepr[2]
        cell = Cell(report.outcome, properties.get("max_diff"), message)
        self.matrix.record(properties["vlmforge_model"], properties["vlmforge_check"], cell)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        matrix = self.matrix
        if not matrix.cells:
            return
        terminalreporter.section("vlmforge conformance matrix")
        terminalreporter.write_line(matrix.to_text())
        for model, check, cell in matrix.failures():
            first_line = cell.message.splitlines()[0] if cell.message else ""
            terminalreporter.write_line(f"FAIL {model} / {check}: {first_line}")
        # One line per model and reason: a checkpoint that is no VLM skips every check for one reason.
        skipped: dict[tuple[str, str], list[str]] = {}
        for model, check, cell in matrix.skipped():
            skipped.setdefault((model, cell.message), []).append(check)
        for (model, reason), checks in skipped.items():
            terminalreporter.write_line(f"SKIP {model} / {', '.join(checks)}: {reason}")
        for model, reason in self.untested:
            terminalreporter.write_line(
                f"ERROR {model}: no conformance check ran (all skipped: {reason}). The session fails so "
                "that a run which tested nothing is never green; test a supported image+text VLM."
            )
        path = self.config.getoption("vlmforge_report")
        if path and not hasattr(self.config, "workerinput"):
            try:
                json_path, md_path = matrix.write(path)
            except OSError as error:  # checked at start-up; the folder may have gone since
                terminalreporter.write_line(f"ERROR: could not write the conformance report {path}: {error}")
                return
            terminalreporter.write_line(f"conformance report: {json_path} and {md_path}")

    @property
    def untested(self) -> list[tuple[str, str]]:
        """``(model, reason)`` for each model with recorded checks of which none ran (all skipped)."""
        untested = []
        # A family this transformers release cannot run was tested as far as it can be (not at all, for a
        # reason every cell states); a model that is no VLM, or skips every check, is untested.
        cannot_run = {t.name for t in self.config.stash[TARGETS_KEY] if t.release_defect}
        for model, row in self.matrix.cells.items():
            if model in cannot_run:
                continue
            if row and all(cell.outcome == "skipped" for cell in row.values()):
                reasons = sorted({cell.message for cell in row.values()})
                untested.append((model, "; ".join(reasons)[:300]))
        return untested

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """A model on which no check ran fails the session (the controller decides under xdist)."""
        if hasattr(self.config, "workerinput"):
            return
        if self.untested and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def matrix_row(item: pytest.Item) -> str:
    """The check name of a suite test: its registered check's, else the test's own minus ``test_``."""
    check: Check | None = item.callspec.params.get(CHECK_PARAM)
    return check.name if check is not None else item.originalname.removeprefix("test_")


@pytest.fixture(scope="session")
def vlm(conformance_model: str, pytestconfig: pytest.Config) -> Any:
    """The :class:`vlmforge.HookedVLM` under test (loaded once per session)."""
    return pytestconfig.stash[SESSION_KEY].model(conformance_model)


def _register_hypothesis_profiles() -> None:
    """``--hypothesis-profile=vlmforge-long`` runs the property tests with many more examples."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - hypothesis is a dependency
        return
    settings.register_profile(
        "vlmforge-long", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


_register_hypothesis_profiles()
