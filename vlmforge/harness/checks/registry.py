"""The check registry: one :class:`Check` record per conformance check, in matrix order.

A check is a function ``(HookedVLM) -> CheckResult`` that raises :class:`CheckFailure` when the
adapter is wrong. The :func:`check` decorator registers it under the function's own ``__name__``
(so the function, the pytest test id and the conformance-matrix row share one name), takes the
summary from the docstring's first line, and runs it under ``torch.no_grad``. The record also says
when the check does not apply, so the plugin reports a *skip with the reason* instead of a pass:

* ``requires="supports_batching"`` — skipped on models whose adapter declares the capability False;
* ``not_applicable=predicate`` — ``predicate(vlm)`` returns why the check does not apply, or None.

Adding a check from your own code: define it in a ``conftest.py`` next to where you run pytest, or
in any importable module you load with ``pytest -p my_checks`` (or a ``pytest11`` entry point)::

    from vlmforge.harness.checks import CheckFailure, CheckResult, check

    @check(requires="supports_batching")
    def my_family_invariant(vlm):
        \"\"\"One line saying what holds.\"\"\"
        ...
        raise CheckFailure("what differs", max_diff=..., where="layer 3, head 1", hint="what to fix")
        return CheckResult(max_diff, "short detail")

Every check registered before collection runs on every model under test and gets its own matrix
row. A name can be registered once: a second function with a taken name is an error (re-importing
the same module just replaces its checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import torch

from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import CAPABILITY_NAMES
from vlmforge.harness.compare import CheckFailure

if TYPE_CHECKING:
    from vlmforge.harness.measure import Measurement


@dataclass(frozen=True)
class CheckResult:
    """A passed check: the measured max-abs difference (if numeric) and a short detail."""

    max_diff: float | None = None
    detail: str = ""


CheckFunction = Callable[[HookedVLM], CheckResult]
NotApplicable = Callable[[HookedVLM], str | None]


def missing_capability(vlm: HookedVLM, capability: str) -> str | None:
    """The skip reason when ``vlm``'s adapter declares ``capability`` False, else None."""
    if getattr(vlm.adapter.spec.capabilities, capability):
        return None
    return f"{vlm.model_name} declares {capability}=False"


@dataclass(frozen=True)
class Check:
    """One registered conformance check.

    Attributes:
        name: the matrix row and pytest id; a Python identifier (the function's name for ``@check``).
        function: runs the check; returns a :class:`CheckResult` or raises ``CheckFailure``.
        summary: one line saying what the check proves.
        requires: a capability flag the model must declare True for the check to run.
        not_applicable: returns why the check does not apply to a model, or None when it does.
    """

    name: str
    function: CheckFunction
    summary: str = ""
    requires: str | None = None
    not_applicable: NotApplicable | None = None

    def __post_init__(self) -> None:
        # The name doubles as a pytest id and a -k keyword: keep it one token.
        if not self.name.isidentifier():
            raise ValueError(f"check name {self.name!r} is not a Python identifier")
        if self.requires is not None and self.requires not in CAPABILITY_NAMES:
            raise ValueError(
                f"check {self.name!r} requires {self.requires!r}, which is not a capability; "
                f"known: {', '.join(CAPABILITY_NAMES)}"
            )

    def skip_reason(self, vlm: HookedVLM) -> str | None:
        """Why this check does not run on ``vlm`` (a capability it lacks, or not applicable), or None."""
        if self.requires is not None and (missing := missing_capability(vlm, self.requires)):
            return missing
        if self.not_applicable is not None and (reason := self.not_applicable(vlm)):
            return f"not applicable: {reason}"
        return None


#: Every registered check by name, in registration order (the order of the matrix rows).
CHECKS: dict[str, Check] = {}


def _origin(record: Check) -> str:
    function = record.function
    return f"{function.__module__}.{getattr(function, '__qualname__', repr(function))}"


def register_check(record: Check) -> Check:
    """Add ``record`` to :data:`CHECKS`; a name already taken by another function is a ``ValueError``.

    The same function registered again (its module re-imported, e.g. by ``importlib.reload``)
    replaces its earlier record in place.
    """
    existing = CHECKS.get(record.name)
    if existing is not None and _origin(existing) != _origin(record):
        raise ValueError(
            f"a check named {record.name!r} is already registered by {_origin(existing)}; "
            f"rename {_origin(record)}"
        )
    CHECKS[record.name] = record
    return record


@overload
def check(function: CheckFunction, /) -> CheckFunction: ...


@overload
def check(
    *, requires: str | None = None, not_applicable: NotApplicable | None = None
) -> Callable[[CheckFunction], CheckFunction]: ...


def check(
    function: CheckFunction | None = None,
    /,
    *,
    requires: str | None = None,
    not_applicable: NotApplicable | None = None,
) -> CheckFunction | Callable[[CheckFunction], CheckFunction]:
    """Register a check under its function's name; use bare (``@check``) or with options.

    Args:
        requires: a capability flag the model must declare True (else the check is skipped).
        not_applicable: ``predicate(vlm)`` returning why the check does not apply, or None.

    Returns the function wrapped in ``torch.no_grad``, which is also what the registry runs.
    """

    def register(function: CheckFunction) -> CheckFunction:
        # Checks only read the model: no autograd graph, whatever modules they call directly.
        checked = torch.no_grad()(function)
        lines = (function.__doc__ or "").strip().splitlines()
        register_check(Check(function.__name__, checked, lines[0] if lines else "", requires, not_applicable))
        return checked

    return register if function is None else register(function)


def declared_equals_measured(vlm: HookedVLM, field: str, measurement: Measurement) -> CheckResult:
    """The check of a measured spec field: the declared value (``field``, a dotted spec path such as
    ``"capabilities.supports_batching"`` or ``"min_image_tokens"``) must equal ``measurement``'s."""
    declared = vlm.adapter.spec
    for part in field.split("."):
        declared = getattr(declared, part)
    if declared != measurement.value:
        group, _, name = field.rpartition(".")
        setting = f"Capabilities({name}={measurement.value})" if group else f"{name}={measurement.value}"
        raise CheckFailure(
            f"{'capability ' if group else ''}{name} is declared {declared} but measured {measurement.value} "
            f"({measurement.evidence})",
            max_diff=measurement.max_diff,
            hint=f"set {setting} in the {vlm.adapter.spec.name} family spec",
        )
    return CheckResult(measurement.max_diff, f"declared == measured == {declared}: {measurement.evidence}")
