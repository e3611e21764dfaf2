"""Patching checks: ``run_with_hooks`` changes exactly what the user patched, and nothing else.

The reference never goes through vlmforge: the checks record decoder layers (and ``o_proj``) with
raw PyTorch hooks of their own and recompute what a patch must produce by calling those modules by
hand with the inputs the model gave them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vlmforge.core.hooks import HOOK_TYPES, HookPoint
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.versions import without_cache
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import STATE_AXES, CheckFailure, assert_close, max_abs_difference
from vlmforge.harness.probes import single_probe
from vlmforge.harness.tolerances import tolerance_for

#: Hook types a ``run_with_hooks`` function may replace (recomputed ones are read-only).
PATCHABLE = tuple(name for name, spec in HOOK_TYPES.items() if spec.direction != "computed")
LOGIT_AXES = ("batch", "position", "vocab")
RUNTIME_HINT = "HookedVLM.run_with_hooks / _register: the module a hook point attaches to and its layer"


def present(vlm: HookedVLM, hook_types: Sequence[str]) -> tuple[str, ...]:
    """The hook types this model has on at least one layer (a dense model has no MoE hooks)."""
    return tuple(hook for hook in hook_types if vlm.hook_layers(hook))


def first_tensor(value: Any) -> torch.Tensor:
    """A module's hidden-states output: the tensor itself, or the first item of a tuple."""
    return value[0] if isinstance(value, tuple | list) else value


class ModuleRecorder:
    """Records what some modules receive and return (first call each), with raw PyTorch hooks.

    Hooks registered when the recorder is entered run before any registered later (vlmforge's,
    inside the block): ``outputs`` is what the module itself computed, before a patch replaced it.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.calls: dict[int, tuple[tuple, dict[str, Any]]] = {}  # index -> (args, kwargs)
        self.inputs: dict[int, torch.Tensor] = {}  # index -> hidden states received
        self.outputs: dict[int, torch.Tensor] = {}  # index -> hidden states returned
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _record_input(self, index: int, args: tuple, kwargs: dict[str, Any]) -> None:
        if index not in self.calls:
            self.calls[index] = (args, dict(kwargs))
            self.inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    def _record_output(self, index: int, output: Any) -> None:
        if index not in self.outputs:
            self.outputs[index] = first_tensor(output).detach().clone()

    def __enter__(self) -> ModuleRecorder:
        for index, module in enumerate(self.modules):
            self._handles += [
                module.register_forward_pre_hook(
                    lambda _m, args, kwargs, i=index: self._record_input(i, args, kwargs), with_kwargs=True
                ),
                module.register_forward_hook(
                    lambda _m, _args, output, i=index: self._record_output(i, output)
                ),
            ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def call_again(self, index: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """Call module ``index`` by hand on ``hidden_states`` with the other inputs it was given."""
        args, kwargs = self.calls[index]
        # Without a KV cache: the recorded one already holds this pass's keys, appending would corrupt it.
        kwargs = without_cache(kwargs)
        if args:
            return first_tensor(self.modules[index](hidden_states, *args[1:], **kwargs))
        return first_tensor(self.modules[index](**{**kwargs, "hidden_states": hidden_states}))


def assert_unchanged(actual: torch.Tensor, expected: torch.Tensor, what: str, where: str) -> None:
    """Fail unless ``actual`` is bit-identical to ``expected`` (a patch elsewhere must not touch it)."""
    if not torch.equal(actual, expected):
        difference = max_abs_difference(actual, expected)
        raise CheckFailure(
            what,
            max_diff=difference.value,
            where=", ".join(filter(None, (where, difference.describe(STATE_AXES)))),
            hint=RUNTIME_HINT,
        )


def perturbation(like: torch.Tensor) -> torch.Tensor:
    """A deterministic perturbation of ``like``'s shape and dtype, as large as ``like`` is spread."""
    noise = torch.randn(like.shape, generator=torch.Generator().manual_seed(0))
    return (noise * like.float().std().cpu()).to(device=like.device, dtype=like.dtype)


def not_enough_layers(vlm: HookedVLM) -> str | None:
    """Why :func:`patching_layer_locality` does not apply: it needs a layer after the patched one."""
    return None if vlm.lm_num_layers >= 2 else f"{vlm.lm_num_layers} decoder layer(s), locality needs 2"


def locality_layer(plain: ModuleRecorder) -> int:
    """The layer to patch: nearest the middle, preferring one whose output reaches the next layer as is.

    Deepstack-like families add to the residual between some layers; a boundary where they do not
    keeps the reference (layer i + 1 fed exactly the patched residual) free of that assumption.
    """
    count = len(plain.modules)
    candidates = sorted(range(count - 1), key=lambda layer: (abs(layer - count // 2), layer))
    strict = [layer for layer in candidates if torch.equal(plain.outputs[layer], plain.inputs[layer + 1])]
    return (strict or candidates)[0]


def patched_forward(
    vlm: HookedVLM, inputs: Any, hooks: Sequence[tuple[str, Callable]], modules: Sequence[nn.Module]
) -> tuple[torch.Tensor, ModuleRecorder]:
    """Logits of a forward under ``run_with_hooks(hooks)``, with ``modules`` recorded by raw hooks."""
    with ModuleRecorder(modules) as recorder, vlm.run_with_hooks(hooks):
        logits = vlm.forward(inputs, use_cache=False).logits
    return logits, recorder


def block_between(plain: ModuleRecorder, blocks: ModuleRecorder, layer: int) -> int | None:
    """The cross-attention block (spec ``modules.cross_attention_blocks``) the decoder ran between layer
    ``layer`` and the next: the one fed that layer's output that returned the next layer's input."""
    return next(
        (
            index
            for index in blocks.outputs
            if torch.equal(blocks.inputs[index], plain.outputs[layer])
            and torch.equal(blocks.outputs[index], plain.inputs[layer + 1])
        ),
        None,
    )


def check_residual_patch(
    vlm: HookedVLM, inputs: Any, plain: ModuleRecorder, layer: int, blocks: ModuleRecorder | None = None
) -> tuple[float, torch.Tensor]:
    """Perturb ``hook_resid_post`` of ``layer``; layer + 1 must receive it and compute from it, no earlier
    layer may change. Returns the worst difference against the hand-computed reference and the logits.

    ``blocks`` records the decoder's cross-attention blocks (if any) in the unpatched run: one running
    between the two layers is called by hand on the patched residual for the reference.
    """
    # The hook shows the residual stream: the layer's output, or its active stream where the layers pass a
    # stack of parallel streams (spec.active_stream); the patch moves that part of the output only.
    delta = perturbation(vlm.adapter.residual_view(plain.outputs[layer]))
    hooks = [(f"lm.blocks.{layer}.hook_resid_post", lambda activation, _point: activation + delta)]
    full_delta = torch.zeros_like(plain.outputs[layer])
    vlm.adapter.residual_view(full_delta).copy_(delta)
    logits, patched = patched_forward(vlm, inputs, hooks, plain.modules)
    for earlier in range(layer + 1):
        assert_unchanged(
            patched.outputs[earlier],
            plain.outputs[earlier],
            f"decoder layer {earlier}'s own output changed when patching lm.blocks.{layer}.hook_resid_post",
            f"layer {earlier}",
        )
    block = block_between(plain, blocks, layer) if blocks is not None else None
    if block is not None:
        # A cross-attention block between the layers computes from the patched residual (not additive).
        expected_input = blocks.call_again(block, plain.outputs[layer] + full_delta)
    else:
        # What the model adds between the layers (nothing, or deepstack features) is added to the patch too.
        between = plain.inputs[layer + 1] - plain.outputs[layer]
        expected_input = plain.outputs[layer] + full_delta + between
    expected_output = plain.call_again(layer + 1, expected_input)
    tolerance = tolerance_for(vlm.dtype).activation
    worst = max(
        assert_close(
            patched.inputs[layer + 1],
            expected_input,
            tolerance=tolerance,
            relative=True,
            what=f"input of decoder layer {layer + 1} vs the patched lm.blocks.{layer}.hook_resid_post",
            axes=STATE_AXES,
            prefix=f"layer {layer + 1}",
            hint=RUNTIME_HINT,
        ),
        assert_close(
            patched.outputs[layer + 1],
            expected_output,
            tolerance=tolerance,
            relative=True,
            what=f"output of decoder layer {layer + 1} vs the layer called by hand on the patched residual",
            axes=STATE_AXES,
            prefix=f"layer {layer + 1}",
            hint=RUNTIME_HINT,
        ),
    )
    return worst, logits


def check_head_ablation(vlm: HookedVLM, inputs: Any, layer: int) -> tuple[float, torch.Tensor]:
    """Zero one head of ``attn.hook_z`` in ``layer``: its o_proj must compute from exactly that ablated z,
    earlier layers' o_proj must not change. Returns the worst difference and the patched logits."""
    o_projs = vlm.adapter.lm_o_proj
    head = vlm.adapter.lm_num_heads // 2

    def ablate(z: torch.Tensor, _point: HookPoint) -> torch.Tensor:
        z = z.clone()  # [B, L, H, d_h]
        z[:, :, head] = 0
        return z

    # A hybrid decoder's layers without attention have no o_proj: an uncalled placeholder stands in.
    absent = {i for i, module in enumerate(o_projs) if module is None}
    o_projs = [module if module is not None else nn.Identity() for module in o_projs]
    with ModuleRecorder(o_projs) as plain:
        vlm.forward(inputs, use_cache=False)
    logits, patched = patched_forward(vlm, inputs, [(f"lm.blocks.{layer}.attn.hook_z", ablate)], o_projs)
    for earlier in range(layer):
        if earlier in absent:
            continue
        assert_unchanged(
            patched.outputs[earlier],
            plain.outputs[earlier],
            f"o_proj output of layer {earlier} changed when patching lm.blocks.{layer}.attn.hook_z",
            f"layer {earlier}",
        )
    raw = plain.inputs[layer]
    z = vlm.adapter.format_cache_item("attn.hook_z", raw)
    expected = o_projs[layer](ablate(z, HookPoint(layer, "attn.hook_z")).reshape(raw.shape))
    worst = assert_close(
        patched.outputs[layer],
        expected,
        tolerance=tolerance_for(vlm.dtype).activation,
        relative=True,
        what=f"o_proj output with head {head} of lm.blocks.{layer}.attn.hook_z zeroed vs o_proj by hand",
        axes=STATE_AXES,
        prefix=f"layer {layer}",
        hint=RUNTIME_HINT,
    )
    return worst, logits


@check(not_applicable=not_enough_layers)
def patching_layer_locality(vlm: HookedVLM) -> CheckResult:
    """A patch on ``lm.blocks.i`` changes exactly what flows from layer i (vs layers called by hand)."""
    inputs = single_probe(vlm)
    blocks = ModuleRecorder(vlm.adapter.cross_attention_blocks or [])
    with ModuleRecorder(vlm.adapter.lm_layers) as plain, blocks:
        logits = vlm.forward(inputs, use_cache=False).logits
    layer = locality_layer(plain)
    residual, residual_logits = check_residual_patch(vlm, inputs, plain, layer, blocks)
    # The head ablation needs attention: the nearest softmax-attention layer (a hybrid's may be sparse).
    attention_layers = vlm.hook_layers("attn.hook_z")
    head_layer = min(attention_layers, key=lambda i: (abs(i - layer), i))
    ablation, ablated_logits = check_head_ablation(vlm, inputs, head_layer)
    for hook, patched_logits in (("hook_resid_post", residual_logits), ("attn.hook_z", ablated_logits)):
        if torch.equal(patched_logits, logits):
            raise CheckFailure(
                f"patching lm.blocks.{layer}.{hook} left the logits bit-identical: the patch was not applied",
                hint=RUNTIME_HINT,
            )
    return CheckResult(
        max(residual, ablation),
        f"patched layer {layer}: hook_resid_post; layer {head_layer}: attn.hook_z head",
    )


def logits_under(vlm: HookedVLM, inputs: Any, hooks: Sequence[tuple[str, Callable]]) -> torch.Tensor:
    """The logits of a forward under ``run_with_hooks(hooks)``."""
    with vlm.run_with_hooks(hooks):
        return vlm.forward(inputs).logits


def assert_no_op(
    vlm: HookedVLM, inputs: Any, plain: torch.Tensor, hook_types: Sequence[str], function: Callable, what: str
) -> None:
    """Fail unless ``function`` on every layer of ``hook_types`` leaves the logits bit-identical.

    All hook types are patched at once; on a difference each is retried alone, to name the culprit.
    """
    calls: set[str] = set()

    def counted(activation: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
        calls.add(point.hook_type)
        return function(activation, point)

    logits = logits_under(vlm, inputs, [(f"lm.blocks.*.{hook}", counted) for hook in hook_types])
    if never := [hook for hook in hook_types if hook not in calls]:
        raise CheckFailure(f"{what} functions were never called for {', '.join(never)}", hint=RUNTIME_HINT)
    if torch.equal(logits, plain):
        return
    culprits = [
        hook
        for hook in hook_types
        if not torch.equal(logits_under(vlm, inputs, [(f"lm.blocks.*.{hook}", function)]), plain)
    ]
    difference = max_abs_difference(logits, plain)
    raise CheckFailure(
        f"{what} on every layer changed the logits "
        f"(culprit hook types: {', '.join(culprits) or 'none alone, only together'})",
        max_diff=difference.value,
        where=difference.describe(LOGIT_AXES),
        hint="HookedVLM._register: how a returned tensor (or None) is mapped back into the module",
    )


@check
def patching_identity_and_none(vlm: HookedVLM) -> CheckResult:
    """Identity patches (every patchable hook) and functions returning None leave logits bit-identical."""
    inputs = single_probe(vlm)
    plain = vlm.forward(inputs).logits
    patchable, every = present(vlm, PATCHABLE), present(vlm, tuple(HOOK_TYPES))
    assert_no_op(vlm, inputs, plain, patchable, lambda activation, _point: activation, "an identity patch")
    assert_no_op(vlm, inputs, plain, every, lambda _activation, _point: None, "returning None")
    return CheckResult(
        0.0, f"{len(patchable)} patchable / {len(every)} hook types on up to {vlm.lm_num_layers} layers"
    )


def assert_layer_labels(vlm: HookedVLM, seen: dict[HookPoint, torch.Tensor], layers: ModuleRecorder) -> None:
    """The residual each wildcard function saw at ``lm.blocks.i`` is decoder layer i's own input / output."""
    for layer in range(vlm.lm_num_layers):
        for hook, recorded in (("hook_resid_pre", layers.inputs), ("hook_resid_post", layers.outputs)):
            assert_unchanged(
                seen[HookPoint(layer, hook)],
                vlm.adapter.residual_view(recorded[layer]),
                f"the activation handed to lm.blocks.{layer}.{hook} is not decoder layer {layer}'s",
                f"layer {layer}",
            )


#: The recomputed attention hooks get a wildcard forward of their own: recomputing re-runs q_proj and
#: k_proj, which calls any ``attn.hook_q`` / ``attn.hook_k`` function of the same layer again (a runtime
#: bug, pinned by an xfail test in tests/harness/test_runtime_paths.py; merge the groups once fixed).
WILDCARD_GROUPS = (
    tuple(hook for hook in HOOK_TYPES if hook not in ("attn.hook_scores", "attn.hook_pattern")),
    ("attn.hook_scores", "attn.hook_pattern"),
)


def wildcard_calls(
    vlm: HookedVLM, inputs: Any, hook_types: Sequence[str]
) -> tuple[dict[HookPoint, int], dict[HookPoint, torch.Tensor], ModuleRecorder]:
    """One forward with a counting read function on ``lm.blocks.*.<hook>`` for each of ``hook_types``.

    Returns the calls per hook point, the residual each resid hook point was handed, and the decoder
    layers as recorded by raw hooks.
    """
    counts: dict[HookPoint, int] = {}
    seen: dict[HookPoint, torch.Tensor] = {}

    def count(activation: torch.Tensor, point: HookPoint) -> None:
        point = HookPoint(point.layer, point.hook_type)  # by name: a runtime may hand a HookPoint subclass
        counts[point] = counts.get(point, 0) + 1
        if point.hook_type in ("hook_resid_pre", "hook_resid_post"):
            seen.setdefault(point, activation.detach().clone())

    with (
        ModuleRecorder(vlm.adapter.lm_layers) as layers,
        vlm.run_with_hooks([(f"lm.blocks.*.{hook}", count) for hook in hook_types]),
    ):
        vlm.forward(inputs)
    return counts, seen, layers


def assert_once_per_layer(vlm: HookedVLM, counts: dict[HookPoint, int], hook_types: Sequence[str]) -> None:
    """Every layer's point of every hook type was called exactly once, and no other point was."""
    for hook in hook_types:
        for layer in vlm.hook_layers(hook):
            calls = counts.get(HookPoint(layer, hook), 0)
            if calls != 1:
                raise CheckFailure(
                    f"lm.blocks.*.{hook} called its function {calls} times for layer {layer} in one forward, "
                    "expected once",
                    where=f"layer {layer}",
                    hint="wildcard expansion in expand_hook_names / HookedVLM.run_with_hooks",
                )
    expected = {HookPoint(layer, hook) for hook in hook_types for layer in vlm.hook_layers(hook)}
    if unknown := sorted(point.name for point in counts if point not in expected):
        raise CheckFailure(f"wildcard functions were called for hook points never asked for: {unknown}")


@check
def patching_wildcard(vlm: HookedVLM) -> CheckResult:
    """``lm.blocks.*.<hook>`` calls its function once per layer per forward, labelled with that layer."""
    inputs = single_probe(vlm)
    for group in WILDCARD_GROUPS:
        hook_types = present(vlm, group)
        counts, seen, layers = wildcard_calls(vlm, inputs, hook_types)
        assert_once_per_layer(vlm, counts, hook_types)
        if seen:
            assert_layer_labels(vlm, seen, layers)
    hooks = present(vlm, tuple(HOOK_TYPES))
    return CheckResult(detail=f"{len(hooks)} hook types on their layers (of {vlm.lm_num_layers}), once each")
