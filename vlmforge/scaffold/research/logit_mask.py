"""Does the model's forward mask part of its vocabulary out of the logits?

Some models pin the logits of tokens they never predict to the dtype minimum after the unembedding
(Chameleon: its image-code tokens, ``logits[:, :, image_tokens] = finfo.min``). A logit lens of such a
model differs from its logits exactly there. This is *measured*: a forward of the tiny model on the
harness's image probe shows which columns hold the dtype minimum at every position; then the model's
own attributes are searched for the object holding exactly those ids, so the spec can name it
(``spec.logit_mask``) and the adapter reads the ids from the loaded model, whatever its vocabulary size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vlmforge.harness.probes import single_probe
from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.capabilities import research_vlm, unmeasured_reason
from vlmforge.scaffold.research.isolation import quiet

__all__ = ["find_id_attribute", "masked_logit_columns", "research_logit_mask"]

_QUESTION = "Token ids whose logits the model's forward pins to the dtype minimum"


def research_logit_mask(
    report: ResearchReport, tiny: Any, tiny_error: str | None, name: str, *, measure: bool = True
) -> None:
    """Answer ``logit_mask`` by measuring the logits of ``tiny`` (a tiny model bundle, or None).

    Unmeasured (``measure=False`` or no tiny model) is not "no mask": the report says ``unknown`` and the
    module keeps the default; a measurement that fails leaves a TODO, as the capability flags do.
    """
    unmeasured = unmeasured_reason(measure, tiny, tiny_error)
    if unmeasured is not None:
        report.add(Answer("logit_mask", _QUESTION, None, unmeasured, "unknown"))
        return
    try:
        vlm = research_vlm(report, tiny, name)
        with quiet():
            columns, positions = masked_logit_columns(vlm.forward(single_probe(vlm)).logits)
    except Exception as error:  # the forward itself failed: report it, do not guess
        reason = f"unknown: measuring failed ({type(error).__name__}: {error})"
        report.add(Answer("logit_mask", _QUESTION, None, reason, "unknown", slot="logit_mask"))
        return
    if not columns:
        evidence = f"tiny model: no logit column holds the dtype minimum at all {positions} positions"
        report.add(Answer("logit_mask", _QUESTION, None, evidence, "measured"))
        return
    shown = ", ".join(str(i) for i in sorted(columns)[:8]) + (" ..." if len(columns) > 8 else "")
    measured = (
        f"tiny model: {len(columns)} logit columns ({shown}) hold the dtype minimum at all {positions} "
        "positions of the image probe"
    )
    path = find_id_attribute(tiny.model, columns)
    if path is None:
        evidence = f"{measured}, but no attribute of the model holds exactly these ids: name it by hand"
        report.add(Answer("logit_mask", _QUESTION, None, evidence, "hand_edit", slot="logit_mask"))
        return
    evidence = f"{measured}; model.{path} holds exactly these ids"
    report.add(Answer("logit_mask", _QUESTION, path, evidence, "measured"))


def masked_logit_columns(logits: torch.Tensor) -> tuple[frozenset[int], int]:
    """The vocab columns of ``logits`` [..., vocab] that are the dtype minimum at every position, and
    the number of positions. A random model's unembedding never gives exactly that value by itself."""
    pinned = (logits == torch.finfo(logits.dtype).min).flatten(0, -2).all(dim=0)
    return frozenset(int(i) for i in pinned.nonzero().flatten()), int(logits.shape[:-1].numel())


def find_id_attribute(model: nn.Module, ids: frozenset[int]) -> str | None:
    """The shortest dotted path from ``model`` to an attribute holding exactly ``ids``, or None.

    Looks at every module's plain attributes and buffers, and one level into plain objects (properties
    included): masked ids are typically derived data such as a vocabulary mapping's ``image_tokens``.
    """
    found = [path for path, value in _candidates(model) if _as_ids(value, len(ids)) == ids]
    return min(found, key=lambda path: (path.count("."), len(path)), default=None)


def _candidates(model: nn.Module) -> Iterator[tuple[str, Any]]:
    for prefix, module in model.named_modules():
        base = f"{prefix}." if prefix else ""
        for name, buffer in module.named_buffers(recurse=False):
            yield base + name, buffer
        for name, value in vars(module).items():
            if name.startswith("_") or isinstance(value, (nn.Module, torch.Tensor)):
                continue
            yield base + name, value
            if _is_plain_object(value):
                for attribute, inner in _public_attributes(value):
                    yield f"{base}{name}.{attribute}", inner


def _is_plain_object(value: Any) -> bool:
    # Containers, numbers and strings hold no named ids; configs are objects (and may hold them).
    plain = (str, bytes, int, float, bool, list, tuple, dict, set, frozenset, type(None))
    return not isinstance(value, plain)


def _public_attributes(value: Any) -> Iterator[tuple[str, Any]]:
    for attribute in sorted(set(dir(value))):
        if attribute.startswith("_"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inner = getattr(value, attribute)
        except Exception:  # a property that cannot be computed here holds no ids
            continue
        if not callable(inner):
            yield attribute, inner


def _as_ids(value: Any, size: int) -> frozenset[int] | None:
    """``value`` as a set of token ids when it is a flat sequence / integer tensor of ``size`` distinct
    ints, else None."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dim() != 1 or value.is_meta:
            return None
        return frozenset(int(i) for i in value.tolist()) if value.numel() == size else None
    sequence = isinstance(value, (list, tuple, set, frozenset)) and len(value) == size
    if sequence and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return frozenset(value)
    return None
