"""How the attention calls its rotary function: confirmed by *measurement* where the source leaves it open.

The source shows how many tensors each rotary call takes (``rotary(q, k, cos, sin)``, ``rotary(q, k, freqs)``,
or one call per tensor, ``rotary(x, cos, sin)``), but not always which convention the adapter must use to
reproduce it: a call per tensor may rotate tokens-first tensors with ``unsqueeze_dim=2``, and a signature
the source reading cannot place is left as a hand edit. Each candidate convention is then tried on the tiny
model through a throwaway adapter; the one whose recomputed attention matches eager attention is the answer.
The plain single ``rotary(q, k, cos, sin)`` call needs no measurement (every seed family confirms it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vlmforge.core.spec import ROTARY_CONVENTIONS, AttentionRecipe
from vlmforge.harness.checks.attention import compare_attention_to_eager
from vlmforge.harness.probes import single_probe
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["research_rotary_convention"]

_QUESTION = "How the rotary function is called"


def research_rotary_convention(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Measure ``rotary_convention`` where the source answer is a per-tensor call or a hand edit.

    The source answer stands where it is the plain ``cos_sin`` / ``freqs_tokens_first`` call, or where
    nothing can be measured (then its evidence says so). Otherwise the convention is the one candidate
    that reproduces eager attention; none or several matching is a hand edit.
    """
    source = report.answers.get("rotary_convention")
    if report.value("rotary_function") is None or source is None:
        return
    if source.value != "per_tensor" and not source.needs_edit:
        return
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        evidence = f"{source.evidence}; not confirmed on a tiny model ({unmeasured})"
        report.add(dataclasses.replace(source, evidence=evidence))
        return
    outcomes = {convention: _try(report, tiny, name, convention) for convention in ROTARY_CONVENTIONS}
    matching = [convention for convention, outcome in outcomes.items() if outcome is None]
    tried = "; ".join(f"{convention}: {outcome or 'matches'}" for convention, outcome in outcomes.items())
    if len(matching) != 1:
        evidence = (
            f"{source.evidence}; tiny model: {len(matching)} conventions reproduce eager attention ({tried})"
        )
        answer = Answer("rotary_convention", _QUESTION, None, evidence, "hand_edit", slot="attention_recipe")
        report.add(answer)
        return
    evidence = (
        f"{source.evidence}; tiny model: recomputed attention matches eager only with "
        f"{matching[0]!r} ({tried})"
    )
    report.add(Answer("rotary_convention", _QUESTION, matching[0], evidence, "measured"))


def _try(report: ResearchReport, tiny: Any, name: str, convention: str) -> str | None:
    """None when ``convention`` reproduces eager attention on the image probe, else why not."""
    recipe = report.spec_kwargs().get("attention", AttentionRecipe())
    try:
        changes = {"attention": dataclasses.replace(recipe, rotary_convention=convention)}
        vlm = research_vlm(report, tiny, name, changes)
        with quiet():
            compare_attention_to_eager(vlm, single_probe(vlm))
    except Exception as error:  # a mismatch (CheckFailure) or a call the function does not accept
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return None
