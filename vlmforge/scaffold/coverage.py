"""The coverage record: which VLM families the scaffolder has been proven on, and how.

``python -m vlmforge.scaffold.coverage`` prints the record table (``FAMILIES.md``; a test keeps the file
equal to a fresh rendering). Per family: where it was scaffolded from, whether the committed module is
untouched scaffolder output (``tests/scaffold/test_registered_families.py`` re-runs research and
compares field by field), which conformance checks do not apply to it and why (each check's own
``not_applicable`` predicate, evaluated on the family's tiny model). Families asked for but not
registered yet are listed with what blocks them.
"""

from __future__ import annotations

import argparse
import sys

from vlmforge.core.registry import ModelRegistry
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import CHECKS

__all__ = ["HAND_EDITS", "NOT_REGISTERED", "record_table"]

#: Registered families whose module differs from what ``scaffold-new-model`` wrote: {family: {field: why}}.
HAND_EDITS: dict[str, dict[str, str]] = {}

#: model_types named in the coverage issue (#9) that are not registered yet, with what blocks a
#: zero-edit scaffold + ``--verify``.
NOT_REGISTERED: dict[str, str] = {
    "llama4": "its attention is beyond the recipe: RoPE through a complex-number apply_rotary_emb (another "
    "signature), an L2 q/k norm after RoPE, a position-dependent query temperature on the no-RoPE layers, "
    "chunked-attention masks; its experts return one row per (expert slot, token), not the summed output",
    "fuyu": "a fused per-head query_key_value with q/k layernorms (the spec has no fused-qkv field yet); "
    "FuyuProcessor drops the first token of the image span (a SentencePiece '▁' the tiny byte-level "
    "tokenizer does not produce), so no prompt with an image builds",
    "mllama": "researched clean (its cross-attention layers are a hybrid decoder's non-attention layers), "
    "but the image reaches the decoder through cross-attention states, not input embeddings: the "
    "image-token checks and the eager attention reference need a cross-attention notion the spec lacks",
    "ovis2": "the vision features also overwrite the visual-indicator token positions next to the image "
    "tokens (image_token_count: 3 non-image positions replaced); the spec has one image-token id",
    "mistral3": "a 16-px image (resized to one merged 28-px patch) fails inside transformers' Mistral3 "
    "image features on the tiny model (split_with_sizes: 96 rows vs [1]); property checks use 16-112 px",
    "perception_lm": "transformers' default config has model_args=None, which its modeling code indexes; "
    "from the stored Perception-LM-1B config it builds, but images of different sizes give different "
    "tile counts that its processor cannot stack in one batch",
    "chameleon": "researched clean (from the tiny config: the default one does not build), but images are "
    "VQ codes that become ordinary token ids (no image features in the input embeddings) and the model "
    "masks the image-code logits: image-token and logit-lens checks need a VQ-token notion",
    "gemma3n": "its timm MobileNetV5 tower cannot be shrunk through model_args (a ~300M-parameter tiny "
    "model, 22 s to build) and the multimodal vocab_offset lies beyond the tiny vocabulary",
    "kosmos-2": "transformers registers no processor class under the model_type 'kosmos-2'; image features "
    "replace the positions marked by image_embeds_position_mask, not an image-token id",
    "idefics": "images enter through gated cross-attention blocks (model.gated_cross_attn_layers), not as "
    "tokens: no image-token id, and two block lists qualify as the decoder's",
}


def _not_applicable(family: str) -> list[str]:
    """``check: reason`` for every conformance check that does not apply to ``family``'s tiny model."""
    vlm = HookedVLM.from_pretrained(f"tiny/{family}")
    return [f"`{name}`: {reason}" for name, check in CHECKS.items() if (reason := check.skip_reason(vlm))]


def record_table() -> str:
    """The coverage record as a Markdown table (registered families first, then the blocked ones)."""
    lines = [
        "| family | scaffolded from | zero-edit | not applicable (reason) |",
        "|---|---|---|---|",
    ]
    for family, adapter in sorted(ModelRegistry.adapters().items()):
        spec = adapter.spec
        edits = HAND_EDITS.get(family)
        zero_edit = "untouched" if not edits else "; ".join(f"`{f}`: {why}" for f, why in edits.items())
        source = f"`{spec.tiny_reference or spec.checkpoints[0]}`"
        skipped = "<br>".join(_not_applicable(family)) or "none"
        lines.append(f"| `{family}` | {source} | {zero_edit} | {skipped} |")
    for model_type, reason in sorted(NOT_REGISTERED.items()):
        lines.append(f"| `{model_type}` (not registered) | `{model_type}` | blocked: {reason} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    sys.stdout.write(
        "# Family coverage record\n\n"
        "Generated by `python -m vlmforge.scaffold.coverage > FAMILIES.md`; `tests/scaffold/"
        "test_registered_families.py` keeps it in sync and proves every `untouched` entry. Every registered "
        "family passes the conformance matrix on its tiny model (`python -m pytest -n 2`); the last column "
        "lists the checks that do not apply to it, with the reason the check itself gives.\n\n"
        + record_table()
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
