"""The research report: answers with evidence, and how they become spec values and copier answers."""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import PretrainedConfig

from vlmforge.core.spec import FamilySpec
from vlmforge.scaffold import schema

__all__ = [
    "NEEDS_EDIT",
    "STATUS_HELP",
    "TEMPLATE_SLOTS",
    "Answer",
    "ResearchReport",
    "ResolvedSource",
    "SourceKind",
    "Status",
    "default_adapter_class",
    "default_family_name",
]

Status = Literal["found", "measured", "default", "unknown", "hand_edit"]
SourceKind = Literal["local_dir", "hub_cache", "reference", "model_type"]

# Statuses that leave work for a person: they become TODO comments in the generated module.
NEEDS_EDIT: frozenset[str] = frozenset({"unknown", "hand_edit"})
STATUS_HELP = {
    "found": "read from the config / module tree / source",
    "measured": "measured on a tiny random model or a real processor",
    "default": "not encoded anywhere inspectable; the conventional default is used (see evidence)",
    "unknown": "could not be answered; the generated module carries a TODO",
    "hand_edit": "answered, but the generic mechanism cannot express it; needs a hand edit",
}
# Places in the generated module a TODO can sit at (derived from the FamilySpec fields, see schema).
TEMPLATE_SLOTS = schema.template_slots(FamilySpec)


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Answer:
    """One research answer.

    Attributes:
        key: stable identifier (``"language_model"``), also the copier question it feeds, if any.
        question: the Phase-1 question in words.
        value: the answer (``None`` when unknown).
        evidence: what in the objects shows it ("model.model.language_model.layers is a ModuleList ...").
        status: see :data:`STATUS_HELP`.
        slot: where in the generated module a TODO for this answer belongs (a copier question name).
    """

    key: str
    question: str
    value: Any
    evidence: str
    status: Status = "found"
    slot: str | None = None

    @property
    def needs_edit(self) -> bool:
        return self.status in NEEDS_EDIT


@dataclass(frozen=True)
class ResolvedSource:
    """The input, resolved to a config.

    Attributes:
        given: the argument as typed.
        kind: ``local_dir``, ``hub_cache`` (hub id found in the local HF cache), ``reference`` (stored
            config of :mod:`vlmforge.tiny`) or ``model_type`` (transformers' default config).
        config: the loaded config.
        checkpoint: hub id to list in the family's checkpoints (None for a model_type / local dir).
        files_dir: directory that may hold the real processor / tokenizer files.
        description: one line for the report.
    """

    given: str
    kind: SourceKind
    config: PretrainedConfig
    checkpoint: str | None
    files_dir: Path | None
    description: str


@dataclass
class ResearchReport:
    """All answers for one architecture, plus how they were obtained.

    Attributes:
        source: the resolved input.
        model_type: ``config.model_type``.
        transformers_version: the transformers the answers hold for.
        answers: ordered answers by key.
        timings: seconds per research phase.
        peak_rss_mb: the process's peak resident memory after research (MiB).
    """

    source: ResolvedSource
    model_type: str
    transformers_version: str
    answers: dict[str, Answer] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None

    # ----------------------------------------------------------------- access
    def add(self, answer: Answer) -> Answer:
        self.answers[answer.key] = answer
        return answer

    def __getitem__(self, key: str) -> Answer:
        return self.answers[key]

    def value(self, key: str, default: Any = None) -> Any:
        answer = self.answers.get(key)
        return default if answer is None or answer.value is None else answer.value

    @property
    def needs_edit(self) -> list[Answer]:
        """Answers that leave work for a person."""
        return [a for a in self.answers.values() if a.needs_edit]

    def report_only_items(self, spec_class: type[FamilySpec] = FamilySpec) -> list[Answer]:
        """Open answers with no place in the generated code: they get no TODO, only the report."""
        slots = TEMPLATE_SLOTS if spec_class is FamilySpec else schema.template_slots(spec_class)
        return [a for a in self.needs_edit if (a.slot or (a.key if a.key in slots else None)) is None]

    def todos(self, spec_class: type[FamilySpec] = FamilySpec) -> dict[str, str]:
        """TODO text per template slot: what is missing and why (several answers may share a slot).

        Answers with no place in the generated code (processor class, resize strategy) stay in the report
        only: a TODO must sit where the edit is made.
        """
        slots = TEMPLATE_SLOTS if spec_class is FamilySpec else schema.template_slots(spec_class)
        todos: dict[str, list[str]] = {}
        for answer in self.needs_edit:
            slot = answer.slot or (answer.key if answer.key in slots else None)
            if slot is not None:
                evidence = answer.evidence.removeprefix("unknown: ")
                todos.setdefault(slot, []).append(f"{answer.question} [{answer.status}]: {evidence}")
        return {slot: " ".join(texts) for slot, texts in todos.items()}

    # ------------------------------------------------------------ spec values
    def spec_answers(self) -> dict[str, Any]:
        """``{key: value}`` of all answers, the ``model_types`` fallback (the researched one) included."""
        answers = {key: answer.value for key, answer in self.answers.items()}
        if answers.get("model_types") is None:
            answers["model_types"] = (self.model_type,)
        return answers

    def spec_kwargs(self, spec_class: type[FamilySpec] = FamilySpec) -> dict[str, Any]:
        """The researched spec fields (all but the identity ones: name, checkpoints, aliases...)."""
        return schema.spec_kwargs(self.spec_answers(), spec_class, identity=False)

    def to_spec(
        self,
        name: str,
        checkpoints: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
        spec_class: type[FamilySpec] = FamilySpec,
    ) -> FamilySpec:
        """A spec built from the answers (what the generated module will declare)."""
        identity = {"name": name, "checkpoints": tuple(checkpoints), "aliases": dict(aliases or {})}
        return schema.spec_from_answers(self.spec_answers() | identity, spec_class)

    # ------------------------------------------------------------- renderings
    def copier_answers(
        self,
        name: str,
        *,
        checkpoints: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
        notes: str = "",
        spec_class: type[FamilySpec] = FamilySpec,
    ) -> dict[str, Any]:
        """Answers for the ``family`` copier template (``vlmforge/templates/family/copier.yml``)."""
        checkpoints = list(dict.fromkeys(checkpoints))
        tiny_reference = self.value("tiny_reference") or ""
        if checkpoints and tiny_reference == checkpoints[0]:
            tiny_reference = ""  # FamilySpec already defaults the tiny reference to the first checkpoint
        identity = {
            "name": name,
            "checkpoints": checkpoints,
            "aliases": dict(aliases or {}),
            "tiny_reference": tiny_reference,
            "notes": notes,
        }
        return {
            **schema.answers_from_values(self.spec_answers() | identity, spec_class),
            "adapter_class": default_adapter_class(name, self.value("model_class", ""), self.model_type),
            "summary": self.summary(),
            "custom_processor": bool(self.value("custom_processor", False)),
            "todos": self.todos(spec_class),
        }

    def summary(self) -> str:
        """One line for the generated module's docstring."""
        decoder = self.value("decoder_architecture", "unknown decoder")
        return f"{self.value('model_class', self.model_type)} ({self.model_type}): {decoder} decoder."

    def to_markdown(self) -> str:
        """The report as Markdown: source, one row per question with evidence, timings, open items."""
        lines = [
            f"# Research report: `{self.source.given}`",
            "",
            f"- source: {self.source.description}",
            f"- model_type: `{self.model_type}`; transformers {self.transformers_version}",
        ]
        if self.timings:
            timing = ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())
            lines.append(f"- time: {timing}")
        if self.peak_rss_mb is not None:
            lines.append(f"- peak RSS of the process: {self.peak_rss_mb:.0f} MiB")
        lines += ["", "| question | answer | status | evidence |", "|---|---|---|---|"]
        for answer in self.answers.values():
            value = _format_value(answer.value)
            evidence = answer.evidence.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {answer.question} | {value} | {answer.status} | {evidence} |")
        open_items = self.needs_edit
        lines += ["", f"## Needs a hand edit ({len(open_items)})", ""]
        lines += [f"- **{a.question}** ({a.status}): {a.evidence}" for a in open_items] or ["- nothing"]
        lines += ["", "Statuses: " + "; ".join(f"`{k}` = {v}" for k, v in STATUS_HELP.items()), ""]
        return "\n".join(lines)


def _format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value) or "—"
    text = str(value).replace("|", "\\|").replace("\n", "\\n")
    return f"`{text}`"


# ------------------------------------------------------------------------------------------------ naming
def default_family_name(model_type: str) -> str:
    """A registry id from a model_type: lowercase, non-identifier characters -> ``_`` (blip-2 -> blip_2)."""
    name = re.sub(r"\W", "_", model_type.lower())
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"family_{name}"
    return name


def default_adapter_class(name: str, model_class: str, model_type: str) -> str:
    """``<Prefix>Adapter``: the model class's prefix when the family is named after its model_type
    (``Qwen2_5_VLForConditionalGeneration`` -> ``Qwen2_5_VLAdapter``), else CamelCase of the name."""
    prefix = re.sub(r"For[A-Z]\w*$", "", model_class) if model_class else ""
    if name != default_family_name(model_type) or not prefix.isidentifier():
        prefix = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Family"
    return f"{prefix}Adapter"
