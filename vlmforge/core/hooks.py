"""Hook points: names, where each one lives, and how its activation is captured or patched.

Hook names follow VLM Spectra: ``lm.blocks.{i}.<hook type>``; ``lm.blocks.*.<hook type>`` expands to
every layer. Each hook type is captured at exactly one place:

=====================  ==========================  =====================================================
hook type              module role (site)          activation
=====================  ==========================  =====================================================
hook_resid_pre         decoder layer, input        residual stream entering the layer  [B, L, D]
hook_resid_post        decoder layer, output       residual stream leaving the layer   [B, L, D]
attn.hook_in           attention, input            normalised attention input          [B, L, D]
attn.hook_q/k/v        q/k/v_proj, output          projections (before q/k norm, RoPE) [B, L, H(_kv), d_h]
attn.hook_scores       (recomputed)                pre-softmax scores, RoPE applied    [B, H, L, L]
attn.hook_pattern      (recomputed)                softmax(scores + mask)              [B, H, L, L]
attn.hook_z            o_proj, input               per-head attention values           [B, L, H, d_h]
attn.hook_head_out     (recomputed)                each head's write to the residual   [B, L, H, D]
attn.hook_out          o_proj, output              attention output                    [B, L, D]
mlp.hook_in            mlp, input                  normalised MLP input                [B, L, D]
mlp.hook_pre           gate_proj, output           gate pre-activation                 [B, L, F]
mlp.hook_pre_linear    up_proj, output             linear branch                       [B, L, F]
mlp.hook_post          down_proj, input            act(gate) * up                      [B, L, F]
mlp.hook_out           mlp, output                 MLP output                          [B, L, D]
mlp.hook_router_logits (recomputed; MoE layers)    router logits                       [B, L, E]
mlp.hook_experts_out   experts, output (MoE)       routing-weighted sum of the experts [B, L, D]
=====================  ==========================  =====================================================

``attn.hook_z`` is what ``o_proj`` reads: where the attention norms the concatenated head outputs first
(spec ``attention.output_norm``, Kosmos-2), it holds the normed values. ``attn.hook_v`` is ``v_proj``'s output
before a declared value norm (spec ``attention.v_norm``), ``mlp.hook_pre`` the gate projection's output
before a declared gate transform (spec ``modules.gate_transform``).

Where the decoder layers pass parallel residual streams stacked on a leading axis (``[N, B, L, D]``,
Gemma3n's AltUp; spec ``active_stream``), ``hook_resid_pre`` / ``hook_resid_post`` read and patch the active
stream ([B, L, D]); the other streams are not hooked. A layer attending with another layer's keys and values
(spec ``attention.kv_shared``) has no ``attn.hook_k`` / ``attn.hook_v`` (no k/v projection) and no
``attn.hook_scores`` / ``attn.hook_pattern`` (its keys are not computed from its own input).

A fused ``gate_up_proj`` (spec ``modules.gate_up_proj``) carries ``mlp.hook_pre`` in the first half of its
output and ``mlp.hook_pre_linear`` in the second; each hook sees (and may replace) its half only. A hook
type exists on the layers whose module exists (:meth:`ModelAdapter.absence`): on a mixture-of-experts
layer the dense ``mlp.hook_pre`` / ``hook_pre_linear`` / ``hook_post`` do not, the MoE hooks do; a
cross-attention layer (spec ``modules.cross_attention``) has its residual and MLP hooks but no ``attn.*``;
cross-attention blocks the decoder applies between its layers (spec ``modules.cross_attention_blocks``,
IDEFICS) have no hooks of their own: ``hook_resid_pre`` of layer i is layer i's input, after the block
before it, so ``hook_resid_post`` of layer i - 1 differs from it by what the block wrote;
``*`` expands to the layers that have the hook, and naming another layer is an error saying why.

Recomputed hooks are derived from the captured inputs by the adapter (under ``no_grad``); they can
be read by ``run_with_hooks`` functions but not patched, since the model never materialises them
outside eager attention.

One more hook type controls rather than carries activations, so it is kept out of ``HOOK_TYPES`` (the
activation table the conformance harness checks shapes against) and listed in ``MASK_HOOK_TYPES``:
``attn.hook_mask``, a forward pre-hook on the attention module's ``attention_mask`` keyword, whose value
is the 4-D mask the attention receives (``[B, 1, L, L_k]``). Its functions see the mask as the
attention implementation receives it (additive float under eager, boolean under SDPA with padding);
where the decoder passes none (SDPA, no padding) an additive float causal mask (0 / ``-inf``) is built
for the function, and written back only if the function changed or replaced it. Caching it stores
that mask. Patching it is attention knock-out (:class:`vlmforge.core.patching.BlockAttention`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from vlmforge.core.errors import InvalidHookError
from vlmforge.core.roles import (
    ATTENTION,
    DOWN_PROJ,
    EXPERTS,
    GATE_PROJ,
    K_PROJ,
    LAYER,
    MLP,
    O_PROJ,
    Q_PROJ,
    ROUTER,
    UP_PROJ,
    V_PROJ,
    Heads,
    Role,
)


@dataclass(frozen=True)
class HookType:
    """Where a hook type is captured.

    Attributes:
        site: the role of the module the PyTorch hook attaches to (resolved per layer by the adapter).
        direction: ``"input"`` (forward pre-hook on the module's hidden-states argument),
            ``"output"`` (forward hook on its output), ``"computed"`` (recomputed by the adapter) or
            ``"mask"`` (forward pre-hook on the ``attention_mask`` keyword).
    """

    site: Role
    direction: Literal["input", "output", "computed", "mask"]

    @property
    def heads(self) -> Heads | None:
        """How the captured activation splits into heads (from the role table), or ``None``."""
        return self.site.heads(self.direction)


HOOK_TYPES: dict[str, HookType] = {
    "hook_resid_pre": HookType(LAYER, "input"),
    "hook_resid_post": HookType(LAYER, "output"),
    "attn.hook_in": HookType(ATTENTION, "input"),
    "attn.hook_q": HookType(Q_PROJ, "output"),
    "attn.hook_k": HookType(K_PROJ, "output"),
    "attn.hook_v": HookType(V_PROJ, "output"),
    "attn.hook_scores": HookType(ATTENTION, "computed"),
    "attn.hook_pattern": HookType(ATTENTION, "computed"),
    "attn.hook_z": HookType(O_PROJ, "input"),
    "attn.hook_head_out": HookType(O_PROJ, "computed"),
    "attn.hook_out": HookType(O_PROJ, "output"),
    "mlp.hook_in": HookType(MLP, "input"),
    "mlp.hook_pre": HookType(GATE_PROJ, "output"),
    "mlp.hook_pre_linear": HookType(UP_PROJ, "output"),
    "mlp.hook_post": HookType(DOWN_PROJ, "input"),
    "mlp.hook_out": HookType(MLP, "output"),
    "mlp.hook_router_logits": HookType(ROUTER, "computed"),
    "mlp.hook_experts_out": HookType(EXPERTS, "output"),
}

#: Hook types recomputed from the attention's own input (q/k projections, norms, RoPE): a layer attending
#: with another layer's keys (``spec.attention.kv_shared``) has none of them.
RECOMPUTED_ATTENTION: tuple[str, ...] = ("attn.hook_scores", "attn.hook_pattern")

#: Hook types that control the computation instead of carrying an activation (see the module docstring).
MASK_HOOK_TYPES: dict[str, HookType] = {"attn.hook_mask": HookType(ATTENTION, "mask")}

#: Every hook type a name may use.
ALL_HOOK_TYPES: dict[str, HookType] = {**HOOK_TYPES, **MASK_HOOK_TYPES}

_HOOK_NAME = re.compile(r"^lm\.blocks\.(?P<layer>\*|-?\d+)\.(?P<type>.+)$")


@dataclass(frozen=True)
class HookPoint:
    """One concrete hook: a layer and a hook type. ``name`` is the cache key."""

    layer: int
    hook_type: str

    @property
    def name(self) -> str:
        return f"lm.blocks.{self.layer}.{self.hook_type}"

    @property
    def spec(self) -> HookType:
        return ALL_HOOK_TYPES[self.hook_type]


class RawHook:
    """Marks a hook function to be called with the module call and the flat, raw value.

    ``RawHook(fn)`` is called as ``fn(module, args, kwargs, value)`` (VLM Spectra's convention): the
    value is the tensor as the module reads or returns it (q/k/v/z flat ``[B, L, heads * d_h]``), and a
    returned tensor is written back as is. Plain functions get ``fn(activation, hook_point)`` with
    heads split. ``vlmforge.spectra`` wraps every user function in this.
    """

    __slots__ = ("function",)

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, module: Any, args: tuple, kwargs: dict, value: Any) -> Any:
        return self.function(module, args, kwargs, value)


def expand_hook_names(
    names: str | list[str] | tuple[str, ...],
    num_layers: int,
    absence: Callable[[HookPoint], str | None] | None = None,
) -> list[HookPoint]:
    """Parse and expand hook names (``*`` = every layer, negative indexes count from the end).

    ``absence(point)`` says why a layer has no such hook (``None``: it has it); ``*`` then expands to
    the layers that have it, and an explicit layer without it is an error carrying the reason.

    Raises:
        InvalidHookError: for a malformed name, an unknown hook type, a layer out of range or a layer
            without that hook; the message lists the valid hook types or says why.
    """
    if isinstance(names, str):
        names = [names]
    points: list[HookPoint] = []
    for name in names:
        match = _HOOK_NAME.match(name) if isinstance(name, str) else None
        if match is None or match["type"] not in ALL_HOOK_TYPES:
            raise InvalidHookError(
                f"invalid hook name {name!r}: expected 'lm.blocks.<layer|*>.<hook type>' with hook type "
                f"one of {', '.join(ALL_HOOK_TYPES)}"
            )
        layer_text, hook_type = match["layer"], match["type"]
        if layer_text == "*":
            layers = range(num_layers)
        else:
            layer = int(layer_text)
            if not -num_layers <= layer < num_layers:
                raise InvalidHookError(
                    f"invalid hook name {name!r}: layer {layer} out of range for {num_layers} layers"
                )
            layers = [layer % num_layers]
        for layer in layers:
            point = HookPoint(layer, hook_type)
            reason = absence(point) if absence is not None else None
            if reason is not None:
                if layer_text == "*":
                    continue
                raise InvalidHookError(f"invalid hook name {name!r}: {reason}")
            if point not in points:
                points.append(point)
    return points
