"""The role table: every module the contract names, where its path lives in the spec, how it is reached.

One row per module role (the block norms are roles too: the harness checks ``attn.hook_in`` against the
input norm applied to the residual stream). The adapter's accessors resolve through it, the hook table
names its sites with it, ``format_cache_item`` reads its head split from it, and the harness's contract
checks walk it; so adding a role (a router, another norm) is one row here plus its accessor on
:class:`~vlmforge.core.adapter.ModelAdapter`.

Dimension names used by :attr:`Role.weight` (as in ``modeling_llama.py``):
    hidden = D, query = H * d_h, kv = H_kv * d_h, mlp = F (the MLP's intermediate size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Scope = Literal["model", "decoder", "layers"]
Heads = Literal["query", "kv"]
Dimension = Literal["hidden", "query", "kv", "mlp"]


def _spec_value(spec: Any, dotted: str | None) -> Any:
    if dotted is None:
        return None
    value: Any = spec
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Role:
    """A module the adapter contract exposes.

    Attributes:
        name: the role's name (also the hook-table site name).
        spec_path: dotted :class:`~vlmforge.core.spec.FamilySpec` attribute holding the module's
            attribute path (``"modules.q_proj"``); ``None`` for the decoder layer itself.
        parent: the role the path is resolved from, or ``None`` when resolved from ``scope``.
        scope: for a role without parent: the top model, the decoder (language model) or, for the
            layer role, one entry of the decoder's layer list.
        accessor: the VLM Spectra ``ModelAdapter`` method returning the module (``get_lm_q_proj``).
            Resolution goes through these methods, so a family overriding one accessor changes
            every role below it too.
        all_layers: the contract property listing the module for every layer (``lm_attn``), if any.
        per_layer: whether the accessor takes a layer index.
        optional: a family may declare the path ``None`` (a non-gated MLP has no gate_proj).
        input_heads / output_heads: how the module's input / output activation splits into heads
            (``format_cache_item`` reshapes [B, L, heads * d_h] to [B, L, heads, d_h]).
        weight: the (in, out) dimensions of the module's weight, for the contract's shape check.
        fused: ``(spec path, part)`` of a fused projection that plays this role when the family
            declares no separate module (a fused ``gate_up_proj``: the gate is half 0, up half 1; a fused
            ``qkv_proj``: q, k, v are parts 0, 1, 2).
        moe: where the role exists: ``"dense"`` (layers whose MLP is not a mixture of experts),
            ``"moe"`` (only MoE layers) or ``None`` (every layer).
    """

    name: str
    spec_path: str | None
    accessor: str
    parent: Role | None = None
    scope: Scope = "decoder"
    all_layers: str | None = None
    per_layer: bool = True
    optional: bool = False
    input_heads: Heads | None = None
    output_heads: Heads | None = None
    weight: tuple[Dimension, Dimension | None] | None = None
    fused: tuple[str, int] | None = None
    moe: Literal["dense", "moe"] | None = None

    def declared_path(self, spec: Any) -> str | None:
        """The attribute path this role has in ``spec`` (``None``: the family has no such module).

        A role played by half of a fused projection resolves to the fused module's path.
        """
        own = _spec_value(spec, self.spec_path)
        if own is None and self.fused is not None:
            return _spec_value(spec, self.fused[0])
        return own

    def fused_half(self, spec: Any) -> int | None:
        """Which part of the fused module's output is this role's (``None``: the whole output)."""
        if self.fused is None or _spec_value(spec, self.spec_path) is not None:
            return None
        return self.fused[1] if _spec_value(spec, self.fused[0]) is not None else None

    def heads(self, direction: str) -> Heads | None:
        """The head split of the activation flowing ``"input"`` into or ``"output"`` out of the module."""
        return {"input": self.input_heads, "output": self.output_heads}.get(direction)


LM_HEAD = Role("lm_head", "lm_head", "get_lm_head", scope="model", per_layer=False, weight=("hidden", None))
FINAL_NORM = Role("final_norm", "modules.final_norm", "get_lm_norm", per_layer=False)
LAYER = Role("layer", None, "get_lm_layer", scope="layers", all_layers="lm_layers")
ATTENTION = Role("attn", "modules.attention", "get_lm_attn", LAYER, all_layers="lm_attn")
MLP = Role("mlp", "modules.mlp", "get_lm_mlp", LAYER, all_layers="lm_mlp")
INPUT_NORM = Role("input_norm", "modules.input_norm", "get_lm_input_norm", LAYER, optional=True)
MLP_NORM = Role("mlp_norm", "modules.mlp_norm", "get_lm_mlp_norm", LAYER, optional=True)
#: The spec path of a fused q/k/v projection: q, k and v are its parts 0, 1, 2 (``attention.qkv_layout``).
FUSED_QKV = "modules.qkv_proj"
Q_PROJ = Role(
    "q_proj",
    "modules.q_proj",
    "get_lm_q_proj",
    ATTENTION,
    output_heads="query",
    weight=("hidden", "query"),
    fused=(FUSED_QKV, 0),
)
K_PROJ = Role(
    "k_proj",
    "modules.k_proj",
    "get_lm_k_proj",
    ATTENTION,
    output_heads="kv",
    weight=("hidden", "kv"),
    fused=(FUSED_QKV, 1),
)
V_PROJ = Role(
    "v_proj",
    "modules.v_proj",
    "get_lm_v_proj",
    ATTENTION,
    output_heads="kv",
    weight=("hidden", "kv"),
    fused=(FUSED_QKV, 2),
)
O_PROJ = Role(
    "o_proj",
    "modules.o_proj",
    "get_lm_o_proj",
    ATTENTION,
    all_layers="lm_o_proj",
    input_heads="query",
    weight=("query", "hidden"),
)
_FUSED_GATE_UP = "modules.gate_up_proj"
GATE_PROJ = Role(
    "gate_proj",
    "modules.gate_proj",
    "get_lm_gate_proj",
    MLP,
    optional=True,
    weight=("hidden", "mlp"),
    fused=(_FUSED_GATE_UP, 0),
    moe="dense",
)
UP_PROJ = Role(
    "up_proj",
    "modules.up_proj",
    "get_lm_up_proj",
    MLP,
    optional=True,
    weight=("hidden", "mlp"),
    fused=(_FUSED_GATE_UP, 1),
    moe="dense",
)
DOWN_PROJ = Role(
    "down_proj",
    "modules.down_proj",
    "get_lm_down_proj",
    MLP,
    optional=True,
    weight=("mlp", "hidden"),
    moe="dense",
)
ROUTER = Role("router", "moe.router", "get_lm_router", MLP, optional=True, weight=("hidden", None), moe="moe")
EXPERTS = Role("experts", "moe.experts", "get_lm_experts", MLP, optional=True, moe="moe")

#: Every role, parents before children.
ROLES: tuple[Role, ...] = (
    LM_HEAD, FINAL_NORM, LAYER, ATTENTION, MLP, INPUT_NORM, MLP_NORM,
    Q_PROJ, K_PROJ, V_PROJ, O_PROJ, GATE_PROJ, UP_PROJ, DOWN_PROJ, ROUTER, EXPERTS,
)  # fmt: skip

#: The rest of the adapter contract: dimensions, flags and the recomputation / formatting methods.
CONTRACT_PROPERTIES: tuple[str, ...] = (
    "lm_num_layers",
    "lm_num_heads",
    "lm_num_kv_heads",
    "lm_hidden_dim",
    "lm_head_dim",
    "lm_mlp_dim",
    "has_strict_residual_stream",
)
CONTRACT_METHODS: tuple[str, ...] = (
    "compute_attention_scores",
    "compute_attention_patterns",
    "compute_per_head_contributions",
    "get_image_token_id",
    "image_token_mask",
    "format_cache_item",
)
