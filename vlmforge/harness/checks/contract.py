"""Contract checks: the adapter has every member of the contract, and its modules and hooks have the
shapes the declared dimensions promise.

The accessors and module shapes are read off the role table (:mod:`vlmforge.core.roles`); the hook
shapes are the documented ones, written out here as an independent statement of the contract.
"""

from __future__ import annotations

import torch

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.hooks import HOOK_TYPES
from vlmforge.core.roles import CONTRACT_METHODS, CONTRACT_PROPERTIES, FUSED_QKV, ROLES, Role
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks.registry import CheckResult, check
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.probes import single_probe

#: Contract properties (checked to be properties that evaluate) and methods (checked to be callable).
PROPERTIES = (*(role.all_layers for role in ROLES if role.all_layers), *CONTRACT_PROPERTIES)
METHODS = CONTRACT_METHODS


def _declared(adapter: ModelAdapter, role: Role) -> bool:
    """Whether the family has a module for ``role`` (a non-gated MLP declares no gate_proj)."""
    return not (role.optional and role.declared_path(adapter.spec) is None)


def _first_layer_with(adapter: ModelAdapter, role: Role) -> int | None:
    """The first decoder layer that has ``role`` (a dense projection may exist on later layers only)."""
    return next((i for i in range(len(adapter.lm_layers)) if adapter.absence(role, i) is None), None)


def _missing_members(adapter: ModelAdapter) -> set[str]:
    """Contract members the adapter class lacks (a property that is not one counts as missing)."""

    def present(name: str) -> bool:
        member = getattr(type(adapter), name, None)
        return isinstance(member, property) if name in PROPERTIES else callable(member)

    return {name for name in (*(role.accessor for role in ROLES), *PROPERTIES, *METHODS) if not present(name)}


def _unresolved_members(adapter: ModelAdapter, missing: set[str]) -> list[str]:
    """Present properties that raise, and declared roles whose accessor fails or returns a non-module."""
    problems: list[str] = []
    for name in PROPERTIES:
        if name in missing:
            continue
        try:
            getattr(adapter, name)
        except Exception as error:
            problems.append(f"{name}: {type(error).__name__}: {error}")
    for role in ROLES:
        if role.accessor in missing or not _declared(adapter, role):
            continue
        layer = _first_layer_with(adapter, role) if role.per_layer else None
        if role.per_layer and layer is None:
            continue
        try:
            module = adapter.module(role, layer)
        except Exception as error:
            problems.append(f"{role.accessor}: {type(error).__name__}: {error}")
            continue
        if not isinstance(module, torch.nn.Module):
            problems.append(f"{role.accessor} returned {type(module).__name__}, not an nn.Module")
    return problems


@check
def contract_accessors(vlm: HookedVLM) -> CheckResult:
    """Every method and property of the adapter contract exists and resolves."""
    missing = _missing_members(vlm.adapter)
    problems = [f"{name}: missing from {type(vlm.adapter).__name__}" for name in sorted(missing)]
    problems += _unresolved_members(vlm.adapter, missing)
    if problems:
        raise CheckFailure(
            "adapter contract incomplete: " + "; ".join(problems), hint="the family spec's paths"
        )
    undeclared = [role.name for role in ROLES if not _declared(vlm.adapter, role)]
    members = len(ROLES) + len(PROPERTIES) + len(METHODS)
    return CheckResult(
        detail=f"{members} members resolve"
        + (f" (none declared: {', '.join(undeclared)})" if undeclared else "")
    )


def declared_dimensions(adapter: ModelAdapter) -> tuple[int, int, int, int, int]:
    """(D, H, H_kv, d_h, F) as the adapter declares them."""
    return (
        adapter.lm_hidden_dim,
        adapter.lm_num_heads,
        adapter.lm_num_kv_heads,
        adapter.lm_head_dim,
        adapter.lm_mlp_dim,
    )


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    weight = module.weight
    return int(weight.shape[1]), int(weight.shape[0])


def _shape_problems(adapter: ModelAdapter, dims: dict[str, int]) -> list[str]:
    """Each role's weight (in, out) against the declared dimensions, on every layer it exists in."""
    problems: list[str] = []
    layers = range(len(adapter.lm_layers))
    for role in ROLES:
        if role.weight is None or not _declared(adapter, role):
            continue
        want_in, want_out = (dims[role.weight[0]], dims[role.weight[1]] if role.weight[1] else None)
        in_qkv = role.fused is not None and role.fused[0] == FUSED_QKV
        if want_out is not None and in_qkv and role.fused_half(adapter.spec) is not None:
            want_out = dims["query"] + 2 * dims["kv"]  # the role is a part of a fused q/k/v output
        elif want_out is not None and adapter.output_part(role) is not None:
            want_out *= 2  # the role is half the module's output (fused gate_up, gated query)
        for layer in layers if role.per_layer else [None]:
            if layer is not None and adapter.absence(role, layer) is not None:
                continue
            got_in, got_out = _in_out(adapter.module(role, layer))
            if got_in != want_in or (want_out is not None and got_out != want_out):
                where = role.name if layer is None else f"layer {layer} {role.name}"
                problems.append(f"{where}: in/out {(got_in, got_out)}, expected {(want_in, want_out)}")
    return problems


@check
def contract_shapes(vlm: HookedVLM) -> CheckResult:
    """Module shapes agree with the declared dimensions (heads, kv heads, head_dim, mlp, layers)."""
    a = vlm.adapter
    hidden, heads, kv, head_dim, mlp = declared_dimensions(a)
    problems: list[str] = []
    if a.lm_num_layers != len(a.lm_layers):
        problems.append(f"lm_num_layers={a.lm_num_layers} but the decoder has {len(a.lm_layers)} layers")
    dims = {"hidden": hidden, "query": heads * head_dim, "kv": kv * head_dim, "mlp": mlp}
    problems += _shape_problems(a, dims)
    if problems:
        raise CheckFailure(
            "module shapes disagree with declared dims: " + "; ".join(problems[:5]),
            hint="lm_head_dim (explicit head_dim in the config?), lm_num_kv_heads, the layer path",
        )
    return CheckResult(
        detail=f"H={heads} H_kv={kv} d_h={head_dim} D={hidden} F={mlp} layers={len(a.lm_layers)}"
    )


def _experts(vlm: HookedVLM) -> int | None:
    """The declared number of routed experts (text config), for the router-logits shape; None if dense."""
    config = vlm.adapter.lm_config
    keys = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    return next((int(v) for key in keys if isinstance(v := getattr(config, key, None), int)), None)


@check
def hook_shapes(vlm: HookedVLM) -> CheckResult:
    """Every hook type caches a tensor of the documented shape on every layer."""
    inputs = single_probe(vlm)
    batch, length = inputs["input_ids"].shape
    hidden, heads, kv, head_dim, mlp = declared_dimensions(vlm.adapter)
    expected = {
        "hook_resid_pre": (batch, length, hidden),
        "hook_resid_post": (batch, length, hidden),
        "attn.hook_in": (batch, length, hidden),
        "attn.hook_q": (batch, length, heads, head_dim),
        "attn.hook_k": (batch, length, kv, head_dim),
        "attn.hook_v": (batch, length, kv, head_dim),
        "attn.hook_scores": (batch, heads, length, length),
        "attn.hook_pattern": (batch, heads, length, length),
        "attn.hook_z": (batch, length, heads, head_dim),
        "attn.hook_head_out": (batch, length, heads, hidden),
        "attn.hook_out": (batch, length, hidden),
        "mlp.hook_in": (batch, length, hidden),
        "mlp.hook_pre": (batch, length, mlp),
        "mlp.hook_pre_linear": (batch, length, mlp),
        "mlp.hook_post": (batch, length, mlp),
        "mlp.hook_out": (batch, length, hidden),
        "mlp.hook_router_logits": (batch, length, _experts(vlm)),
        "mlp.hook_experts_out": (batch, length, hidden),
    }
    assert set(expected) == set(HOOK_TYPES), "hook table and check out of sync"
    expected = {hook: shape for hook, shape in expected.items() if vlm.hook_layers(hook)}
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in expected]):
        vlm.forward(inputs)
    problems = [
        f"{name}: {tuple(vlm.cache[name].shape) if name in vlm.cache else 'not cached'}, expected {shape}"
        for hook, shape in expected.items()
        for layer in vlm.hook_layers(hook)
        if (name := f"lm.blocks.{layer}.{hook}") not in vlm.cache or tuple(vlm.cache[name].shape) != shape
    ]
    if problems:
        raise CheckFailure(
            "hook shapes wrong: " + "; ".join(problems[:5]), hint="format_cache_item / module paths"
        )
    return CheckResult(detail=f"{len(expected)} hook types x {vlm.lm_num_layers} layers")
