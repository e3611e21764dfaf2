"""Marker tokens the vision side embeds besides the image tokens, and the config key that lists them.

Some families write into ``inputs_embeds`` at more than the image-token positions: Ovis2 embeds its
``visual_indicator_token_ids`` (``<IMG_START>``, ``<IMG_GRID>``, ``<IMG_END>``...) from rows of its visual
embedding table. That is measured on the tiny model (which positions' decoder input is not the text
embedding of their token), then explained by the config: the one token-id key whose value lists every
measured marker id. Replaced positions that no key explains are reported as unknown, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from vlmforge.harness.probes import single_probe, vision_written_positions
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["config_token_id_keys", "marker_ids_key", "research_image_markers"]

_KEY = "image_marker_ids_attribute"
_QUESTION = "Image markers: config attribute listing the marker tokens the vision side embeds"
# Only keys named like token ids can list token ids: a size (hidden_size = 64) may equal a tiny model's
# token id by chance, and is no evidence.
_TOKEN_ID_KEY = re.compile(r"(_id|_ids|_index|_indices)$")


def research_image_markers(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Measure on ``tiny`` which non-image positions the vision side writes; name the key listing them.

    Args:
        report: the research so far; its spec answers configure the throwaway adapter.
        tiny: the tiny model bundle (``.model``, ``.processor``), or None when it could not be built.
        tiny_error: why it could not be built.
        name: the family id, naming the throwaway adapter.
        measure: False leaves the answer ``unknown`` (the caller asked for no tiny model).
    """
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        report.add(Answer(_KEY, _QUESTION, None, unmeasured, "unknown"))
        return
    try:
        vlm = research_vlm(report, tiny, name)
        through = vlm.adapter.image_cross_attention()
        if through is not None:
            # The image features are the cross-attention's keys and values: the vision side writes no
            # position of the decoder's input (its first layer's input holds what a block wrote already).
            evidence = f"not applicable: images reach the decoder through {through}, not its input embeddings"
            report.add(Answer(_KEY, _QUESTION, None, evidence, "measured"))
            return
        with quiet():
            inputs = single_probe(vlm)
            written = vision_written_positions(vlm, inputs)
            is_image = vlm.adapter.image_token_mask(inputs)
            mask_key = vlm.adapter.spec.image_token.position_mask
            source = (
                f"processor output {mask_key!r}" if mask_key else f"id {vlm.adapter.get_image_token_id()}"
            )
    except Exception as error:  # the measurement itself failed: report it, do not guess
        reason = f"unknown: measuring failed ({type(error).__name__}: {error})"
        report.add(Answer(_KEY, _QUESTION, None, reason, "unknown", slot="image_token"))
        return
    ids = inputs["input_ids"]
    is_image = is_image.to(ids.device)
    marker_ids = sorted(set(ids[written.to(ids.device) & ~is_image].tolist()))
    if not marker_ids:
        evidence = (
            f"tiny model: the vision side writes the {int(is_image.sum())} image-token positions only "
            f"({source})"
        )
        report.add(Answer(_KEY, _QUESTION, None, evidence, "measured"))
        return
    tokenizer = getattr(vlm.prompt_processor, "tokenizer", None)
    shown = tokenizer.convert_ids_to_tokens(marker_ids) if tokenizer is not None else marker_ids
    measured = (
        f"tiny model: besides the {int(is_image.sum())} image-token positions ({source}), the "
        f"vision side writes {int((written & ~is_image).sum())} positions of tokens {marker_ids} ({shown})"
    )
    key, candidates = marker_ids_key(tiny.model.config.to_dict(), marker_ids)
    if key is None:
        found = f"candidates {candidates}" if candidates else "no token-id key of the config lists them all"
        evidence = f"unknown: {measured}; {found}: declare the config attribute listing them by hand"
        report.add(Answer(_KEY, _QUESTION, None, evidence, "unknown", slot="image_token"))
        return
    evidence = f"{measured}; config.{key} lists them"
    report.add(Answer(_KEY, _QUESTION, key, evidence, "measured", slot="image_token"))


def marker_ids_key(config: Mapping[str, Any], marker_ids: Sequence[int]) -> tuple[str | None, list[str]]:
    """The one token-id key of ``config`` (a config's ``to_dict()``) whose value lists every marker id.

    Returns:
        (its dotted path, or None unless exactly one key qualifies; every qualifying key).
    """
    wanted = set(marker_ids)
    candidates = [path for path, ids in config_token_id_keys(config) if wanted <= set(ids)]
    return (candidates[0] if len(candidates) == 1 else None), candidates


def config_token_id_keys(
    config: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(dotted path, ids) of every key named like token ids whose value is an int or a list of ints,
    sub-configs (nested dicts) included."""
    for key, value in config.items():
        if not isinstance(key, str):  # id2label and other int-keyed tables hold no config keys
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from config_token_id_keys(value, f"{path}.")
            continue
        if not _TOKEN_ID_KEY.search(key):
            continue
        values = [value] if isinstance(value, int) else value
        if (
            isinstance(values, (list, tuple))
            and values
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        ):
            yield path, tuple(values)
