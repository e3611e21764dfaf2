"""How a fused q/k/v projection's output splits into q, k and v: *measured*, never read off names.

A fused projection (``spec.modules.qkv_proj``) computes q, k and v in one ``Linear``; its output is either
``[Q; K; V]`` concatenated (Phi-3) or interleaved per key/value head (GPT-NeoX / Persimmon view it as
``[..., heads, 3, head_dim]``). Both are the same width, so the module tree cannot tell them apart, and the
split in ``forward`` is often a helper method. Each candidate layout is tried on the tiny model through a
throwaway adapter: the one whose recomputed attention patterns match the model's own eager attention is
the answer (a random model's patterns match under one layout only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vlmforge.core.spec import QKV_LAYOUTS, AttentionRecipe
from vlmforge.harness.checks.attention import compare_attention_to_eager
from vlmforge.harness.probes import single_probe
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["research_qkv_layout"]

_QUESTION = "Layout of the fused q/k/v projection's output"


def research_qkv_layout(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Answer ``qkv_layout`` by comparing each candidate's recomputed attention with eager on ``tiny``.

    Without a fused projection the answer is the default (unused). Unmeasured (``measure=False`` or no
    tiny model) or no candidate matching leaves a TODO: a layout is never guessed.
    """
    fused = report.value("qkv_proj")
    default = AttentionRecipe().qkv_layout
    if fused is None:
        report.add(Answer("qkv_layout", _QUESTION, default, "no fused q/k/v projection: unused"))
        return
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        report.add(Answer("qkv_layout", _QUESTION, None, unmeasured, "unknown", slot="qkv_layout"))
        return
    outcomes = {layout: _try_layout(report, tiny, name, layout) for layout in QKV_LAYOUTS}
    matching = [layout for layout, outcome in outcomes.items() if outcome is None]
    tried = "; ".join(f"{layout}: {outcome or 'matches'}" for layout, outcome in outcomes.items())
    if len(matching) != 1:
        evidence = f"tiny model: {len(matching)} layouts of {fused} reproduce eager attention ({tried})"
        report.add(Answer("qkv_layout", _QUESTION, None, evidence, "hand_edit", slot="qkv_layout"))
        return
    evidence = f"tiny model: recomputed attention matches eager only with {matching[0]!r} ({tried})"
    report.add(Answer("qkv_layout", _QUESTION, matching[0], evidence, "measured"))


def _try_layout(report: ResearchReport, tiny: Any, name: str, layout: str) -> str | None:
    """None when ``layout`` reproduces eager attention on the image probe, else why not."""
    recipe = report.spec_kwargs().get("attention", AttentionRecipe())
    try:
        vlm = research_vlm(report, tiny, name, {"attention": dataclasses.replace(recipe, qkv_layout=layout)})
        with quiet():
            compare_attention_to_eager(vlm, single_probe(vlm))
    except Exception as error:  # a mismatch (CheckFailure) or a split that does not even fit
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return None
