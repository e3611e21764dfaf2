"""Automated Phase-1 research: answer "how is this VLM built?" from its config alone, with evidence.

The seed guide (``adding-a-new-vlm.md``, Phase 1) asks a person to load the model in a REPL and read
off the model class, the path to the decoder, the attention's rotary function, the image token, the
processor conventions and three capability flags. :func:`research` does the same mechanically:

1. resolve the input (local checkpoint dir, hub id in the local HF cache, a stored reference config or
   a bare ``model_type``) to a config, never touching the network (:mod:`.sources`);
2. instantiate the model class on the **meta device** (no weights, near-zero memory even for 72B) and
   read structure off the module tree, the attention class's source and the config (:mod:`.structure`);
3. test the chat template of the real processor (checkpoint dir) or the tiny one (:mod:`.prompting`);
4. *measure* the capability flags on a tiny random model of the same architecture (here).

Every answer carries its evidence and a status (:mod:`.report`); what cannot be answered is reported
as ``unknown`` / ``hand_edit`` (and becomes a ``# TODO(vlmforge)`` in the generated module), never guessed.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import transformers

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import FamilySpec
from vlmforge.harness.measure import measure_capabilities
from vlmforge.scaffold.prompting import load_processor, research_prompting
from vlmforge.scaffold.report import (
    TEMPLATE_SLOTS,
    Answer,
    ResearchReport,
    ResolvedSource,
    Status,
    default_adapter_class,
    default_family_name,
)
from vlmforge.scaffold.sources import build_meta_model, offline, quiet, resolve_source, select_model_class
from vlmforge.scaffold.structure import research_structure
from vlmforge.tiny import build_tiny_model, build_tiny_processor, reference_checkpoints, resolve_reference

__all__ = [
    "TEMPLATE_SLOTS",
    "Answer",
    "ResearchReport",
    "ResolvedSource",
    "Status",
    "default_adapter_class",
    "default_family_name",
    "offline",
    "research",
    "resolve_source",
]


# --------------------------------------------------------------------------------------- capabilities
def _research_capabilities(report: ResearchReport, tiny: Any, tiny_error: str | None, name: str) -> None:
    """Measure the three flags on the tiny model through an adapter built from the researched spec."""
    questions = {
        "contiguous_image_tokens": "Capability: contiguous image tokens",
        "supports_batching": "Capability: batching gives the same result as singles",
        "strict_residual_stream": "Capability: resid_post[i] == resid_pre[i+1]",
    }
    if tiny is None:
        for key, question in questions.items():
            report.add(
                Answer(key, question, None, f"unknown: no tiny model to measure on ({tiny_error})", "unknown")
            )
        return
    spec = FamilySpec(
        name=name,
        checkpoints=(),
        tiny_reference=report.value("tiny_reference", report.model_type),
        **report.spec_kwargs(),
    )
    adapter_class = type(f"{name}ResearchAdapter", (ModelAdapter,), {"spec": spec, "__module__": __name__})
    try:
        vlm = HookedVLM(
            tiny.model, tiny.processor, adapter=adapter_class(tiny.model), model_name=f"tiny/{name}"
        )
        with quiet():
            measured = measure_capabilities(vlm)
    except Exception as error:  # the measurement itself failed: report it, do not guess the flags
        for key, question in questions.items():
            report.add(
                Answer(
                    key,
                    question,
                    None,
                    f"unknown: measuring failed ({type(error).__name__}: {error})",
                    "unknown",
                    slot=key,
                )
            )
        return
    for key, question in questions.items():
        measurement = measured[key]
        report.add(
            Answer(
                key,
                question,
                bool(measurement.value),
                f"tiny model: {measurement.evidence}",
                "measured",
                slot=key,
            )
        )


# -------------------------------------------------------------------------------------------- research
def _tiny_reference(resolved: ResolvedSource) -> tuple[str, str]:
    """What ``build_tiny_model`` should be given to rebuild this architecture, and why."""
    if resolved.kind == "reference" or (
        resolved.checkpoint and resolved.checkpoint in reference_checkpoints()
    ):
        return resolved.checkpoint or resolved.given, "stored reference config"
    if resolved.kind == "model_type":
        return resolved.given, "bare model_type: build_tiny_model uses transformers' default config"
    # A local dir / cached hub id: use it if the tiny builder accepts it, else fall back to the model_type.
    candidate = str(resolved.files_dir) if resolved.kind == "local_dir" else resolved.given
    with quiet():
        try:
            resolve_reference(candidate)
            return candidate, "build_tiny_model accepts this location"
        except Exception as error:
            return resolved.config.model_type, (
                f"build_tiny_model cannot load {candidate!r} ({type(error).__name__}); the tiny model is "
                f"rebuilt from transformers' default {resolved.config.model_type!r} config instead"
            )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def research(
    source: str,
    *,
    name: str | None = None,
    trust_remote_code: bool = False,
    measure: bool = True,
) -> ResearchReport:
    """Answer the Phase-1 questions for ``source`` (hub id / local dir / stored reference id / model_type).

    Args:
        source: what to research; resolved offline by :func:`resolve_source`.
        name: the family id (only used to name the throwaway adapter the capability measurement needs).
        trust_remote_code: allow a checkpoint's own modelling code (off by default; never implied).
        measure: build a tiny random model and measure the capability flags (else they are ``unknown``).

    Raises:
        ScaffoldError: the input cannot be resolved offline or is not an image+text decoder VLM.
    """
    started = time.perf_counter()
    resolved = resolve_source(source, trust_remote_code=trust_remote_code)
    config = resolved.config
    report = ResearchReport(resolved, config.model_type, transformers.__version__)
    name = name or default_family_name(config.model_type)
    report.timings["config"] = time.perf_counter() - started

    phase = time.perf_counter()
    model_cls = select_model_class(resolved, report, trust_remote_code)
    report.add(
        Answer(
            "model_types",
            "config.model_type values",
            [config.model_type],
            f"config.model_type = {config.model_type!r} ({type(config).__name__})",
        )
    )
    model = build_meta_model(model_cls, config)
    research_structure(model, config, report)
    report.timings["meta model + structure"] = time.perf_counter() - phase
    del model

    phase = time.perf_counter()
    reference, why = _tiny_reference(resolved)
    report.add(
        Answer("tiny_reference", "Tiny model reference (what build_tiny_model rebuilds)", reference, why)
    )
    tiny, tiny_error = None, None
    if measure:
        with quiet():
            try:
                tiny = build_tiny_model(config if resolved.kind != "model_type" else reference, seed=0)
            except Exception as error:  # the tiny builder cannot do this architecture: say so
                tiny_error = f"build_tiny_model failed: {type(error).__name__}: {error}"
    tiny_processor = tiny.processor if tiny is not None else None
    if tiny_processor is None and tiny_error is None:
        with quiet():
            try:
                tiny_processor = build_tiny_processor(config if resolved.kind != "model_type" else reference)
            except Exception as error:
                tiny_error = f"build_tiny_processor failed: {type(error).__name__}: {error}"
    report.timings["tiny model"] = time.perf_counter() - phase

    phase = time.perf_counter()
    processor, provenance = load_processor(resolved, trust_remote_code, tiny_processor, tiny_error)
    research_prompting(config, processor, provenance, model_cls, report)
    report.timings["processor"] = time.perf_counter() - phase

    phase = time.perf_counter()
    if measure:
        _research_capabilities(report, tiny, tiny_error, name)
    else:
        for key, question in (
            ("contiguous_image_tokens", "Capability: contiguous image tokens"),
            ("supports_batching", "Capability: batching gives the same result as singles"),
            ("strict_residual_stream", "Capability: resid_post[i] == resid_pre[i+1]"),
        ):
            report.add(
                Answer(key, question, None, "unknown: not measured (measure=False)", "unknown", slot=key)
            )
    report.timings["capabilities"] = time.perf_counter() - phase
    report.timings["total"] = time.perf_counter() - started
    report.peak_rss_mb = _peak_rss_mb()
    return report
