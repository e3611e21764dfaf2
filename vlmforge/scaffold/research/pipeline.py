"""The research phases in order, each timed: config, meta model + structure, tiny model, processor,
capabilities."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import transformers
from torch import nn
from transformers import PretrainedConfig

from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.report import Answer, ResearchReport, ResolvedSource, default_family_name
from vlmforge.scaffold.research.blocks import research_blocks
from vlmforge.scaffold.research.capabilities import research_capabilities
from vlmforge.scaffold.research.chat_template import research_chat_template
from vlmforge.scaffold.research.image_markers import research_image_markers
from vlmforge.scaffold.research.image_positions import research_image_positions
from vlmforge.scaffold.research.image_token import research_image_token
from vlmforge.scaffold.research.layout import research_layout
from vlmforge.scaffold.research.logit_mask import research_logit_mask
from vlmforge.scaffold.research.model_class import build_meta_model, select_model_class
from vlmforge.scaffold.research.processor import has_stored_template, load_processor, research_processor
from vlmforge.scaffold.research.qkv_layout import research_qkv_layout
from vlmforge.scaffold.research.residual_streams import research_residual_streams
from vlmforge.scaffold.research.rotary_convention import research_rotary_convention
from vlmforge.scaffold.research.sources import resolve_source
from vlmforge.scaffold.research.tiny_model import TinyBuild, build_tiny, image_forward_failure, tiny_reference
from vlmforge.tiny import load_reference_config, reference_checkpoints, tiny_recipe
from vlmforge.tiny.reference import reference_entry

__all__ = ["research", "research_prompting", "research_structure"]


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
    report = ResearchReport(resolved, resolved.config.model_type, transformers.__version__)
    report.timings["config"] = time.perf_counter() - started
    try:
        with _timed(report, "meta model + structure"):
            model_cls = _research_model(resolved, trust_remote_code, report)
    except ScaffoldError as error:
        # transformers' default config of some model_types does not build (Aya Vision's 1152-wide tower
        # with 14 heads); a stored real config of the same model_type is the honest stand-in.
        fallback = _stored_reference_for(resolved, error)
        if fallback is None:
            raise
        resolved = fallback
        report, model_cls = _restart_on(resolved, trust_remote_code)
    with _timed(report, "tiny model"):
        tiny = _research_tiny(resolved, measure, report)
    # Some default configs build but cannot run an image (Llama 4's vision_output_dim 7680 feeds a projector
    # of 4096): measured on the tiny model, a stored real config of the same model_type is the stand-in.
    fallback = _stored_reference_for_broken_tiny(resolved, tiny)
    if fallback is not None:
        resolved = fallback
        report, model_cls = _restart_on(resolved, trust_remote_code)
        with _timed(report, "tiny model"):
            tiny = _research_tiny(resolved, measure, report)
    with _timed(report, "processor"):
        processor, provenance = load_processor(resolved, trust_remote_code, tiny.processor, tiny.error)
        research_prompting(resolved.config, processor, provenance, model_cls, report)
    with _timed(report, "capabilities"):
        family = name or default_family_name(report.model_type)
        # The attention recipe first: every measurement after it runs through the adapter it completes.
        research_qkv_layout(report, tiny.model, tiny.error, family, measure=measure)
        research_rotary_convention(report, tiny.model, tiny.error, family, measure=measure)
        # The residual streams before every measurement that reads the residual hooks.
        research_residual_streams(report, tiny.model, tiny.error, family, measure=measure)
        # Then the image positions: every later measurement locates them through the mask this may find.
        research_image_positions(report, tiny.model, tiny.error, family, measure=measure)
        # Next: the capability measurements compare logits outside the mask it finds.
        research_logit_mask(report, tiny.model, tiny.error, family, measure=measure)
        research_capabilities(report, tiny.model, tiny.error, family, measure=measure)
        research_image_markers(report, tiny.model, tiny.error, family, measure=measure)
    report.timings["total"] = time.perf_counter() - started
    report.peak_rss_mb = _peak_rss_mb()
    return report


def _restart_on(resolved: ResolvedSource, trust_remote_code: bool) -> tuple[ResearchReport, type]:
    """A fresh report and the model structure researched on ``resolved`` (a stored stand-in config)."""
    report = ResearchReport(resolved, resolved.config.model_type, transformers.__version__)
    with _timed(report, "meta model + structure"):
        model_cls = _research_model(resolved, trust_remote_code, report)
    return report, model_cls


def _stored_reference_for(resolved: ResolvedSource, error: ScaffoldError) -> ResolvedSource | None:
    """For a bare model_type whose default config cannot be built: the first stored real config of that
    model_type, resolved as a reference (None when there is none, or the source was not a model_type)."""
    if resolved.kind != "model_type":
        return None
    stored = _stored_config_of(resolved, f"cannot be built: {error}")
    if stored is not None:
        return stored
    # No real config stored either: the tiny factory's config of this model_type (same classes and
    # structure, every size shrunk; tokenizer-dependent fields such as a VQ vocabulary map filled in).
    try:
        config = tiny_recipe(resolved.given).config
    except Exception:  # the tiny factory cannot help either: report the original error
        return None
    return ResolvedSource(
        resolved.given,
        "model_type",
        config,
        None,
        None,
        f"the tiny config vlmforge.tiny builds from transformers' default config for `{resolved.given}` "
        f"(the default config itself cannot be built: {error}; sizes in this report are the tiny ones)",
    )


def _stored_reference_for_broken_tiny(resolved: ResolvedSource, tiny: TinyBuild) -> ResolvedSource | None:
    """For a bare model_type whose default config gives a tiny model that cannot run a one-image prompt: the
    first stored real config of that model_type (None when the tiny model runs, none was built, no config is
    stored, or the source was not a model_type). Measured only where a stored config could replace it."""
    if resolved.kind != "model_type" or tiny.model is None:
        return None
    # The stored model_type read from the file: building every stored config just to compare would be slow.
    model_type = resolved.config.model_type
    if not any(reference_entry(c)["config"].get("model_type") == model_type for c in reference_checkpoints()):
        return None
    failure = image_forward_failure(tiny.model)
    if failure is None:
        return None
    return _stored_config_of(resolved, f"builds, but its tiny model cannot run an image: {failure}")


def _stored_config_of(resolved: ResolvedSource, why: str) -> ResolvedSource | None:
    """The first stored real config of ``resolved``'s model_type; ``why`` says what is wrong with
    transformers' default config (the report's source line)."""
    for checkpoint in reference_checkpoints():
        config = load_reference_config(checkpoint)
        if config.model_type == resolved.config.model_type:
            return ResolvedSource(
                checkpoint,
                "reference",
                config,
                checkpoint,
                None,
                f"stored reference config of {checkpoint} (transformers' default config for "
                f"`{resolved.given}` {why})",
            )
    return None


def research_structure(model: nn.Module, config: PretrainedConfig, report: ResearchReport) -> None:
    """All module-tree answers: decoder path, layers, final norm, lm_head, attention recipe and MLP."""
    decoder = research_layout(model, config, report)
    if decoder is not None:
        research_blocks(decoder, config.get_text_config(decoder=True), report)


def research_prompting(
    config: PretrainedConfig,
    processor: Any,
    provenance: str,
    model_class: type | None,
    report: ResearchReport,
) -> None:
    """Image token, processor and chat-template answers, from ``processor`` (real or tiny)."""
    trusted = provenance.startswith("real") or has_stored_template(config)
    research_image_token(config, processor, provenance, trusted, report)
    research_processor(config, processor, provenance, report)
    research_chat_template(processor, provenance, trusted, model_class, report.value("image_token"), report)
    report.answers.setdefault(
        "custom_processor",
        Answer(
            "custom_processor",
            "Family needs a processor subclass",
            False,
            "the chat template renders image placeholders; the generic VLMProcessor suffices",
        ),
    )


@contextlib.contextmanager
def _timed(report: ResearchReport, phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    report.timings[phase] = time.perf_counter() - start


def _research_model(
    resolved: ResolvedSource, trust_remote_code: bool, report: ResearchReport
) -> type[nn.Module]:
    """The model class, then the structure of that class built on the meta device (dropped afterwards)."""
    config = resolved.config
    model_cls = select_model_class(resolved, report, trust_remote_code)
    report.add(
        Answer(
            "model_types",
            "config.model_type values",
            [config.model_type],
            f"config.model_type = {config.model_type!r} ({type(config).__name__})",
        )
    )
    research_structure(build_meta_model(model_cls, config), config, report)
    return model_cls


def _research_tiny(resolved: ResolvedSource, measure: bool, report: ResearchReport) -> TinyBuild:
    """The tiny reference answer; the tiny model only when capabilities are measured on it."""
    reference, why = tiny_reference(resolved)
    report.add(
        Answer("tiny_reference", "Tiny model reference (what build_tiny_model rebuilds)", reference, why)
    )
    return build_tiny(resolved, reference, with_model=measure)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
