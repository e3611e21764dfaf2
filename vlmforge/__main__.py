"""``python -m vlmforge``: list the supported models, or run a short demo on one of them.

python -m vlmforge list
python -m vlmforge families --json   # the CI matrix: registered, available family names
python -m vlmforge families --markdown   # the README's family table, from the registry
python -m vlmforge demo tiny/qwen3_vl
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from vlmforge.core.errors import VLMForgeError
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.versions import BROKEN_FORWARDS
from vlmforge.harness.probes import probe_image


def _list() -> int:
    """Print every registered family with its checkpoints, aliases, tiny model and capabilities."""
    for row in ModelRegistry.listing():
        state = "available" if row["available"] else f"UNAVAILABLE ({row['why_unavailable']})"
        flags = ", ".join(f"{k}={v}" for k, v in row["capabilities"].items())
        print(f"{row['family']:<12} {row['model_class']:<36} {state}")
        print(f"  tiny: {row['tiny']}   capabilities: {flags}")
        for checkpoint in row["checkpoints"]:
            aliases = [a for a, c in row["aliases"].items() if c == checkpoint]
            print(f"  {checkpoint}" + (f"  (alias: {', '.join(aliases)})" if aliases else ""))
    return 0


def family_names() -> list[str]:
    """Sorted names of the registered families usable with the installed transformers.

    These are the families ``pytest --pyargs vlmforge.harness.suite --all-models`` tests, and the
    CI workflow's matrix (``.github/workflows/conformance.yml`` reads them from ``families --json``).
    """
    return sorted(
        name for name, adapter in ModelRegistry.adapters().items() if ModelRegistry.is_available(adapter)
    )


def family_table() -> str:
    """The README's family table (Markdown), generated from the registry: one row per registered family."""

    def flag(value: bool) -> str:
        return "yes" if value else "**no**"

    lines = [
        "| family | transformers class | checkpoints (aliases) | contiguous image tokens | batching "
        "| strict residual |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(ModelRegistry.listing(), key=lambda row: row["family"]):
        checkpoints = []
        for checkpoint in row["checkpoints"]:
            aliases = [f"`{alias}`" for alias, target in row["aliases"].items() if target == checkpoint]
            checkpoints.append(checkpoint + (f" ({', '.join(aliases)})" if aliases else ""))
        capabilities = row["capabilities"]
        # Stated from the fact, not from the running release: the table reads the same on every release.
        broken = BROKEN_FORWARDS.get(str(row["model_class"]))
        model_class = f"`{row['model_class']}`" + (
            f" (broken in transformers {', '.join('.'.join(map(str, r)) for r in broken.releases)})"
            if broken is not None
            else ""
        )
        lines.append(
            f"| `{row['family']}` | {model_class} | {'<br>'.join(checkpoints)} "
            f"| {flag(capabilities['contiguous_image_tokens'])} | {flag(capabilities['supports_batching'])} "
            f"| {flag(capabilities['strict_residual_stream'])} |"
        )
    return "\n".join(lines)


def _families(as_json: bool, markdown: bool) -> int:
    """Print :func:`family_names` (a JSON list on one line, or one per line), or :func:`family_table`."""
    if markdown:
        print(family_table())
        return 0
    names = family_names()
    print(json.dumps(names) if as_json else "\n".join(names))
    return 0


def _demo(name: str, device: str) -> int:
    """Load ``name``, prompt it with a probe image, generate a few tokens and cache two hooks."""
    started = time.perf_counter()
    vlm = HookedVLM.from_pretrained(name, device=device)
    print(f"loaded {vlm!r} in {time.perf_counter() - started:.2f}s on {vlm.device} ({vlm.dtype})")
    image = probe_image(56, 56)
    inputs = vlm.prepare_messages("What is in the top left corner?", image, assistant_prefill="The corner is")
    ids = inputs["input_ids"][0]
    image_positions = vlm.adapter.image_token_mask(inputs)[0]
    image_tokens = int(image_positions.sum())
    print(f"prompt: {ids.shape[0]} tokens, {image_tokens} image tokens")
    print(f"  {vlm.processor.tokenizer.decode(ids)!r}"[:300])
    generated = vlm.generate(inputs, max_new_tokens=5)
    new = generated.sequences[0, ids.shape[0] :]
    print(f"generate: {vlm.processor.tokenizer.decode(new)!r} (random weights produce noise for tiny models)")
    hooks = ["lm.blocks.*.hook_resid_post", "lm.blocks.0.attn.hook_pattern"]
    with vlm.run_with_cache(hooks):
        vlm.forward(inputs)
    for key in ("lm.blocks.0.hook_resid_post", "lm.blocks.0.attn.hook_pattern"):
        print(f"cache[{key!r}]: {tuple(vlm.cache[key].shape)}")
    pattern = vlm.cache["lm.blocks.0.attn.hook_pattern"][0]
    share = pattern[:, -1, image_positions].sum(-1)
    print(
        "layer 0: attention of the last token on image tokens, per head:", [round(float(s), 3) for s in share]
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m vlmforge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="supported families, checkpoints, aliases and tiny models")
    families = commands.add_parser(
        "families", help="names of the registered families available with this transformers (the CI matrix)"
    )
    families.add_argument("--json", action="store_true", help="print a JSON list on one line")
    families.add_argument(
        "--markdown", action="store_true", help="print the README's family table (every registered family)"
    )
    demo = commands.add_parser("demo", help="load a model, prompt it, generate, cache hooks")
    demo.add_argument(
        "model", nargs="?", default="tiny/llava", help="alias, hub id, local dir or tiny/<family>"
    )
    demo.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "families":
            return _families(args.json, args.markdown)
        return _demo(args.model, args.device)
    except VLMForgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
