"""Deliberately broken adapters and runtimes: the harness must catch every one of them.

Each mutant is a subclass of a real family adapter, or of :class:`HookedVLM`, with one realistic bug
(the kind a maintainer makes when copying an adapter by hand, or a runtime regression: a hook on the
wrong site, a recomputation fed the wrong inputs). ``python -m vlmforge.harness.mutants`` runs every
check on every mutant and prints the kill table (mutant x checks that caught it).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import CHECKS
from vlmforge.tiny import build_tiny_model

AdapterMutation = Callable[[type[ModelAdapter]], type[ModelAdapter]]
RuntimeMutation = Callable[[type[HookedVLM]], type[HookedVLM]]


def unchanged(cls: type) -> type:
    """The identity mutation (a mutant that breaks only the adapter, or only the runtime)."""
    return cls


@dataclass(frozen=True)
class Mutant:
    """One broken variant.

    Attributes:
        name: short id.
        family: the seed family it breaks (one where the bug is observable, e.g. GQA for kv bugs).
        description: the bug, in words.
        mutate: builds the broken adapter class from the family's real one.
        caught_by: the check(s) that must fail for it.
        runtime: builds the broken runtime class from :class:`HookedVLM` (for runtime bugs).
    """

    name: str
    family: str
    description: str
    mutate: AdapterMutation
    caught_by: tuple[str, ...]
    runtime: RuntimeMutation = unchanged


def with_spec(**changes) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
    """A mutation that changes spec fields (nested dataclasses via ``field__attr`` keys)."""

    def mutate(base: type[ModelAdapter]) -> type[ModelAdapter]:
        spec = base.spec
        flat: dict[str, object] = {}
        for key, value in changes.items():
            outer, _, inner = key.partition("__")
            if inner:
                current = flat.get(outer, getattr(spec, outer))
                flat[outer] = dataclasses.replace(current, **{inner: value})
            else:
                flat[key] = value
        return type(f"Mutant{base.__name__}", (base,), {"spec": spec.replace(**flat)})

    return mutate


def with_methods(**methods) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
    """A mutation that overrides adapter methods/properties."""

    def mutate(base: type[ModelAdapter]) -> type[ModelAdapter]:
        return type(f"Mutant{base.__name__}", (base,), dict(methods))

    return mutate


def _misgrouped_kv(self: ModelAdapter, states: torch.Tensor, n_rep: int) -> torch.Tensor:
    # Tiling (h0 h1 h0 h1) instead of interleaving (h0 h0 h1 h1): every query head sees a wrong kv head.
    return states.repeat(1, n_rep, 1, 1)


def _unrepeated_kv(self: ModelAdapter, states: torch.Tensor, n_rep: int) -> torch.Tensor:
    return states


def _wrong_scaling(self: ModelAdapter, attn: torch.nn.Module) -> float:
    return 1.0 / self.lm_head_dim  # 1/d instead of 1/sqrt(d)


def _shifted_image_token(self: ModelAdapter) -> int:
    return ModelAdapter.get_image_token_id(self) + 1


def _off_by_one_layer(self: ModelAdapter, layer: int) -> torch.nn.Module:
    layers = self.lm_layers
    return layers[(layer + 1) % len(layers)]


def _mask_ignored(self: ModelAdapter, hidden_states, layer, attention_mask=None, position_embeddings=None):
    scores = self.compute_attention_scores(hidden_states, layer, None, position_embeddings)
    return torch.softmax(scores.float(), dim=-1).to(hidden_states.dtype)


def _flip(capability: str, family: str) -> Mutant:
    def mutate(base: type[ModelAdapter]) -> type[ModelAdapter]:
        declared = getattr(base.spec.capabilities, capability)
        return with_spec(**{f"capabilities__{capability}": not declared})(base)

    return Mutant(
        f"flip_{capability}",
        family,
        f"{capability} declared the wrong way round",
        mutate,
        (f"capability_{capability}",),
    )


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "rope_skipped",
        "qwen2_5_vl",
        "no rotary embedding applied to q/k",
        with_spec(attention__rotary_function=None),
        ("attention_vs_eager",),
    ),
    Mutant(
        "kv_heads_not_repeated",
        "qwen3_vl",
        "GQA key heads not expanded to the query heads",
        with_methods(_repeat_kv=_unrepeated_kv),
        ("attention_vs_eager",),
    ),
    Mutant(
        "kv_heads_misgrouped",
        "qwen3_vl",
        "GQA key heads tiled instead of interleaved",
        with_methods(_repeat_kv=_misgrouped_kv),
        ("attention_vs_eager",),
    ),
    Mutant(
        "wrong_scaling",
        "llava",
        "scores scaled by 1/d_h instead of 1/sqrt(d_h)",
        with_methods(_scaling=_wrong_scaling),
        ("attention_vs_eager",),
    ),
    Mutant(
        "qk_norm_skipped",
        "qwen3_vl",
        "Qwen3 per-head q/k RMSNorm skipped",
        with_spec(attention__q_norm=None, attention__k_norm=None),
        ("attention_vs_eager",),
    ),
    Mutant(
        "wrong_image_token_id",
        "llava",
        "image token id off by one",
        with_methods(get_image_token_id=_shifted_image_token),
        ("image_token_count",),
    ),
    Mutant(
        "wrong_layer_path",
        "smolvlm",
        "language model path points at the vision encoder",
        with_spec(language_model="model.vision_model.encoder"),
        ("contract_accessors", "contract_shapes"),
    ),
    Mutant(
        "off_by_one_layer",
        "llava",
        "layer i resolves to decoder layer i + 1",
        with_methods(get_lm_layer=_off_by_one_layer),
        ("attention_vs_eager", "resid_post_vs_hidden_states"),
    ),
    Mutant(
        "mask_ignored",
        "qwen2_5_vl",
        "attention mask not added before the softmax",
        with_methods(compute_attention_patterns=_mask_ignored),
        ("attention_vs_eager",),
    ),
    # --- harness truth: hook values, generation, adapter recomputation details (helper H5 appends here)
    # --- harness truth: cached attention and patching (helper H6 appends here)
    _flip("contiguous_image_tokens", "smolvlm"),
    _flip("supports_batching", "llava"),
    _flip("strict_residual_stream", "qwen3_vl"),
)


def mutant_vlm(mutant: Mutant, base: HookedVLM) -> HookedVLM:
    """A (mutant) runtime sharing ``base``'s model and processor, with the mutant adapter."""
    adapter = mutant.mutate(ModelRegistry.adapters()[mutant.family])(base.model)
    runtime = mutant.runtime(HookedVLM)
    return runtime(
        base.model, base.prompt_processor, adapter=adapter, model_name=f"{base.model_name}:{mutant.name}"
    )


PASS = "pass"
SKIP = "skip: "


def run_checks(vlm: HookedVLM, only: Iterable[str] | None = None) -> dict[str, str]:
    """Run every check (or those named in ``only``); map check name -> "pass", "skip: <reason>" or the
    failure's first line."""
    results: dict[str, str] = {}
    selected = CHECKS if only is None else {name: CHECKS[name] for name in only}
    for name, check in selected.items():
        # A check the model cannot run (capability declared False, not applicable) catches nothing.
        if (reason := check.skip_reason(vlm)) is not None:
            results[name] = SKIP + reason
            continue
        try:
            check.function(vlm)
            results[name] = PASS
        except Exception as error:  # a crash is a caught mutant too, as long as it is reported
            results[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return results


def caught(results: dict[str, str]) -> list[str]:
    """The checks that failed in ``results`` (what :func:`run_checks` returned)."""
    return [name for name, outcome in results.items() if outcome != PASS and not outcome.startswith(SKIP)]


def main() -> int:
    """Print the kill table: every mutant, the checks that caught it, and whether the expected ones did."""
    bases: dict[str, HookedVLM] = {}
    escaped = 0
    print(f"{'mutant':<34}{'family':<12}{'expected':<8}caught by")
    for mutant in MUTANTS:
        if mutant.family not in bases:
            adapter_class = ModelRegistry.adapters()[mutant.family]
            tiny = build_tiny_model(adapter_class.spec.reference_checkpoint)
            bases[mutant.family] = HookedVLM(tiny.model, tiny.processor, adapter=adapter_class(tiny.model))
        started = time.perf_counter()
        failed = caught(run_checks(mutant_vlm(mutant, bases[mutant.family])))
        ok = all(name in failed for name in mutant.caught_by)
        escaped += not ok
        print(
            f"{mutant.name:<34}{mutant.family:<12}{'yes' if ok else 'NO':<8}{', '.join(failed)}"
            f"  ({time.perf_counter() - started:.1f}s)"
        )
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
