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
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.hooks import HOOK_TYPES, HookPoint, HookType
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.roles import GATE_PROJ, K_PROJ, Q_PROJ, UP_PROJ
from vlmforge.core.runtime import HookedVLM, HookFunction
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
        float32_only: the bug's effect on the tiny model is below the half-precision tolerances (an
            absolute floor for activations of magnitude < 1), so it is only required to be caught in fp32.
    """

    name: str
    family: str
    description: str
    mutate: AdapterMutation
    caught_by: tuple[str, ...]
    runtime: RuntimeMutation = unchanged
    float32_only: bool = False


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


def _swapped_halves(self: ModelAdapter, role: Any) -> Any:
    part = ModelAdapter.output_part(self, role)
    if part is None or role not in (GATE_PROJ, UP_PROJ) or role.fused_half(self.spec) is None:
        return part
    other = GATE_PROJ if role is UP_PROJ else UP_PROJ
    return ModelAdapter.output_part(self, other)


def _query_reads_key_part(self: ModelAdapter, role: Any) -> Any:
    """A fused q/k/v split one part off: the query role reads the key part."""
    return ModelAdapter.output_part(self, K_PROJ if role is Q_PROJ else role)


def _rotary_on_last_dims(
    self: ModelAdapter, query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial rotary on the wrong dims: the last ``cos``-width dims rotate, the first pass through."""
    width = cos.shape[-1]
    if width >= query.shape[-1]:
        return ModelAdapter._apply_rotary(self, query, key, cos, sin)
    rotated = ModelAdapter._apply_rotary(self, query[..., -width:], key[..., -width:], cos, sin)
    return (
        torch.cat((query[..., :-width], rotated[0]), dim=-1),
        torch.cat((key[..., :-width], rotated[1]), dim=-1),
    )


def _softmaxed_router_logits(self: ModelAdapter, hidden_states: torch.Tensor, layer: int) -> torch.Tensor:
    return torch.softmax(ModelAdapter.compute_router_logits(self, hidden_states, layer).float(), dim=-1)


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


# Helpers of the SDPA-default mutants: mask forms and the eager switch (issue #11).
def _bool_mask_as(convert: Callable[[torch.Tensor], torch.Tensor]) -> AdapterMutation:
    """An adapter whose patterns take SDPA's boolean mask through ``convert`` instead of 0 / -inf."""

    def compute_attention_patterns(
        self: ModelAdapter, hidden_states, layer, attention_mask=None, position_embeddings=None
    ) -> torch.Tensor:
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.bool:
            attention_mask = convert(attention_mask)
        return super(type(self), self).compute_attention_patterns(
            hidden_states, layer, attention_mask, position_embeddings
        )

    return with_methods(compute_attention_patterns=compute_attention_patterns)


def _output_attentions_without_eager(base: type[HookedVLM]) -> type[HookedVLM]:
    """A runtime that never switches to eager: SDPA silently returns no attention weights."""
    return type(f"Mutant{base.__name__}", (base,), {"_attention_for": lambda self, kwargs: nullcontext()})


# Helpers of the hook-value, generation and recomputation-detail mutants (H5).
@dataclass(frozen=True)
class _RelocatedHookPoint(HookPoint):
    """A hook point the runtime captures at another site than the hook table says (same cache name)."""

    relocated: HookType = HOOK_TYPES["hook_resid_pre"]

    @property
    def spec(self) -> HookType:
        return self.relocated


def relocated_hook(hook_type: str, site: HookType) -> RuntimeMutation:
    """A runtime mutation that captures ``hook_type`` at ``site`` (a module role and direction) instead."""

    def mutate(base: type[HookedVLM]) -> type[HookedVLM]:
        def _register(
            self: HookedVLM, point: HookPoint, function: HookFunction, *, reader: bool
        ) -> torch.utils.hooks.RemovableHandle:
            if point.hook_type == hook_type:
                point = _RelocatedHookPoint(point.layer, point.hook_type, site)
            return base._register(self, point, function, reader=reader)

        return type(f"Mutant{base.__name__}", (base,), {"_register": _register})

    return mutate


#: What a runtime that "forgets" the image drops: the pixels and their per-image metadata.
IMAGE_INPUT_KEYS = ("pixel_values", "pixel_attention_mask", "image_grid_thw", "image_sizes")


def _generate_without_image(base: type[HookedVLM]) -> type[HookedVLM]:
    def generate(
        self: HookedVLM, inputs: Any, max_new_tokens: int = 32, do_sample: bool = False, **kwargs: Any
    ) -> Any:
        # A generate that rebuilds the model kwargs from the "text" inputs: the image tokens stay in
        # input_ids, the pixels are lost (after HookedVLM's own input validation would have passed).
        text_side = {key: value for key, value in inputs.items() if key not in IMAGE_INPUT_KEYS}
        kwargs.setdefault("return_dict_in_generate", True)
        with torch.no_grad():
            return self.model.generate(
                **text_side, max_new_tokens=max_new_tokens, do_sample=do_sample, **kwargs
            )

    return type(f"Mutant{base.__name__}", (base,), {"generate": generate})


_QKV_HOOKS = ("attn.hook_q", "attn.hook_k", "attn.hook_v")


def _qkv_heads_transposed(self: ModelAdapter, hook_type: str, item: Any) -> Any:
    formatted = super(type(self), self).format_cache_item(hook_type, item)  # the family's own
    if hook_type not in _QKV_HOOKS or not isinstance(formatted, torch.Tensor):
        return formatted
    # Split as [d_h, heads] and transposed back to the documented [heads, d_h] shape: right shape, every
    # entry from the wrong (head, dim).
    batch, length, heads, head_dim = formatted.shape
    return formatted.reshape(batch, length, head_dim, heads).transpose(2, 3)


def _scores_qk_norm_after_rope(
    self: ModelAdapter,
    hidden_states: torch.Tensor,
    layer: int,
    attention_mask: torch.Tensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    # Qwen3 normalises q/k per head *before* RoPE; with unit norm weights the order would not matter
    # (RoPE is a rotation, RMS-preserving), with real (random) weights it does.
    attn, recipe = self.get_lm_attn(layer), self.spec.attention
    query = self._project_heads(self.get_lm_q_proj(layer), attn, None, hidden_states)
    key = self._project_heads(self.get_lm_k_proj(layer), attn, None, hidden_states)
    cos, sin = position_embeddings or self._default_position_embeddings(hidden_states)
    query, key = self._rotary(query, key, cos, sin)
    query, key = getattr(attn, recipe.q_norm)(query), getattr(attn, recipe.k_norm)(key)
    key = self._repeat_kv(key, query.shape[1] // key.shape[1])
    return torch.matmul(query, key.transpose(2, 3)) * self._scaling(attn)


def _last_input_norm_as_final(self: ModelAdapter) -> torch.nn.Module:
    return self.get_lm_input_norm(self.lm_num_layers - 1)


def _logit_mask_shifted(self: ModelAdapter) -> torch.Tensor | None:
    # The declared ids one token off: a mask on tokens the model does predict.
    mask = ModelAdapter.get_logit_mask(self)
    return None if mask is None else mask + 1


def _project_heads_without_bias(
    self: ModelAdapter,
    projection: torch.nn.Module,
    attn: torch.nn.Module,
    norm: str | None,
    hidden_states: torch.Tensor,
) -> torch.Tensor:
    batch, length, _ = hidden_states.shape
    states = torch.nn.functional.linear(hidden_states, projection.weight)  # the q/k/v bias forgotten
    states = states.view(batch, length, -1, self.lm_head_dim)
    if norm is not None:
        states = getattr(attn, norm)(states)
    return states.transpose(1, 2)


def _head_dim_from_hidden(self: ModelAdapter) -> int:
    return self.lm_hidden_dim // self.lm_num_heads  # ignores Qwen3's explicit head_dim


def _input_norm_as_mlp_norm(self: ModelAdapter, layer: int) -> torch.nn.Module:
    return self.get_lm_input_norm(layer)  # input_layernorm / post_attention_layernorm mixed up


# Helpers of the cached-attention and patching mutants (H6).
class _AdapterWithout:
    """Delegates to an adapter, except that its ``compute_attention_*`` never receive ``keyword``."""

    def __init__(self, adapter: ModelAdapter, keyword: str) -> None:
        self._adapter, self._keyword = adapter, keyword

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def compute_attention_scores(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop(self._keyword, None)
        return self._adapter.compute_attention_scores(*args, **kwargs)

    def compute_attention_patterns(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop(self._keyword, None)
        return self._adapter.compute_attention_patterns(*args, **kwargs)


def computed_hooks_without(keyword: str) -> RuntimeMutation:
    """A runtime mutation whose recomputed attention hooks forget to pass the layer's ``keyword``.

    Only the runtime's hooks are affected: the adapter itself (called directly by the attention
    checks) stays right, as when the bug is in ``HookedVLM._register_computed``.
    """

    def mutate(base: type[HookedVLM]) -> type[HookedVLM]:
        def _register_computed(
            self: HookedVLM, point: HookPoint, module: torch.nn.Module, function: HookFunction
        ) -> torch.utils.hooks.RemovableHandle:
            # The runtime binds self.adapter into the hook it builds: bind the forgetful one.
            real = self.adapter
            self.adapter = _AdapterWithout(real, keyword)  # type: ignore[assignment]
            try:
                return base._register_computed(self, point, module, function)
            finally:
                self.adapter = real

        return type(f"Mutant{base.__name__}", (base,), {"_register_computed": _register_computed})

    return mutate


def _patches_on_next_layer(base: type[HookedVLM]) -> type[HookedVLM]:
    def _register(
        self: HookedVLM, point: HookPoint, function: HookFunction, *, reader: bool
    ) -> torch.utils.hooks.RemovableHandle:
        if not reader:  # off by one in the patching path only: run_with_cache still reads the right layer
            point = HookPoint((point.layer + 1) % self.lm_num_layers, point.hook_type)
        return base._register(self, point, function, reader=reader)

    return type(f"Mutant{base.__name__}", (base,), {"_register": _register})


def _wildcard_skips_last_layer(base: type[HookedVLM]) -> type[HookedVLM]:
    def run_with_hooks(self: HookedVLM, hooks: Any) -> Any:
        # range(n - 1) where range(n) was meant: "lm.blocks.*.<hook>" never reaches the last layer.
        explicit: list[tuple[str, HookFunction]] = []
        for name, function in hooks:
            layers = range(self.lm_num_layers - 1) if ".*." in name else [None]
            explicit += [(name if i is None else name.replace("*", str(i)), function) for i in layers]
        return base.run_with_hooks(self, explicit)

    return type(f"Mutant{base.__name__}", (base,), {"run_with_hooks": run_with_hooks})


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
        "qk_norm_after_rotary",
        "qwen3_vl",
        "Qwen3's weighted q/k RMSNorm declared after RoPE (Llama4's order) though it runs before it",
        with_spec(attention__norms_after_rotary=True),
        ("attention_vs_eager",),
    ),
    Mutant(
        "rotary_convention_freqs",
        "qwen3_vl",
        "rotary(q, k, cos, sin) declared as Llama4's rotary(q, k, freqs) on tokens-first q/k",
        with_spec(attention__rotary_convention="freqs_tokens_first"),
        ("attention_vs_eager",),
    ),
    Mutant(
        "rotary_per_tensor_as_pair",
        "gemma3n",
        "Gemma3n's rotary(x, cos, sin), called once for q and once for k, declared as rotary(q, k, cos, sin)",
        with_spec(attention__rotary_convention="cos_sin"),
        ("attention_vs_eager",),
    ),
    Mutant(
        "kv_shared_undeclared",
        "gemma3n",
        "the layers attending with another layer's keys (no k_proj / v_proj of their own) not declared",
        with_spec(attention__kv_shared=None),
        ("contract_shapes", "attention_vs_eager"),
    ),
    Mutant(
        "v_norm_undeclared",
        "gemma3n",
        "the per-head value norm the attention applies before attending not declared",
        with_spec(attention__v_norm=None),
        ("hook_values_attention",),
    ),
    Mutant(
        "gate_transform_undeclared",
        "gemma3n",
        "the MLP's sparsification of the gate before its activation not declared",
        with_spec(modules__gate_transform=None),
        ("mlp_decomposition",),
    ),
    Mutant(
        "gate_transform_everywhere",
        "gemma3n",
        "the gate sparsification declared on every layer, not only where activation_sparsity is set",
        with_spec(modules__gate_transform_condition=None),
        ("mlp_decomposition",),
    ),
    Mutant(
        "active_stream_undeclared",
        "gemma3n",
        "AltUp's stacked parallel residual streams ([N, B, L, D]) not declared: resid hooks show the stack",
        with_spec(active_stream=None),
        ("hook_shapes",),
    ),
    Mutant(
        "active_stream_wrong",
        "gemma3n",
        "the residual hooks show an AltUp prediction stream instead of the active one",
        with_methods(active_stream=property(lambda self: 1)),
        ("active_stream_carries_the_embeddings",),
    ),
    Mutant(
        "query_temperature_declared",
        "llava",
        "a position-dependent query temperature declared on a decoder without one",
        with_spec(attention__query_temperature="is_causal"),
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
        "image_markers_undeclared",
        "ovis2",
        "the visual-indicator marker tokens the vision side embeds are not declared",
        with_spec(image_token__marker_ids_attribute=None),
        ("image_token_count",),
    ),
    Mutant(
        "cross_attention_blocks_undeclared",
        "idefics",
        "the gated cross-attention blocks the decoder applies between its layers are not declared "
        "(spec.modules.cross_attention_blocks empty): the image is looked for in the input embeddings",
        with_spec(modules__cross_attention_blocks=None),
        ("image_token_count",),
    ),
    Mutant(
        "min_image_tokens_overstated",
        "llava",
        "an image-token floor the model does not have (it would keep small images out of the property tests)",
        with_spec(min_image_tokens=5),
        ("image_min_tokens",),
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
    Mutant(
        "qkv_heads_scrambled",
        "qwen2_5_vl",
        "format_cache_item splits q/k/v as [d_h, heads] and transposes (shape kept, values scrambled)",
        with_methods(format_cache_item=_qkv_heads_transposed),
        ("hook_values_attention",),
    ),
    Mutant(
        "hook_in_before_input_norm",
        "llava",
        "attn.hook_in captured at the decoder layer's input (before the input norm)",
        unchanged,
        ("hook_values_attention_in", "hook_values_attention"),
        runtime=relocated_hook("attn.hook_in", HOOK_TYPES["hook_resid_pre"]),
    ),
    Mutant(
        "resid_pre_reads_output",
        "qwen3_vl",
        "hook_resid_pre captured from the decoder layer's output",
        unchanged,
        ("hook_values_residual",),
        runtime=relocated_hook("hook_resid_pre", HOOK_TYPES["hook_resid_post"]),
    ),
    Mutant(
        "generate_drops_image",
        "llava",
        "generate() strips pixel_values and the image metadata",
        unchanged,
        ("generation_first_step_logits",),
        runtime=_generate_without_image,
    ),
    Mutant(
        "q_norm_applied_to_k",
        "qwen3_vl",
        "keys normalised with the query norm",
        with_spec(attention__k_norm="q_norm"),
        ("attention_vs_eager",),
    ),
    Mutant(
        "qk_norm_after_rope",
        "qwen3_vl",
        "per-head q/k norm applied after RoPE instead of before",
        with_methods(compute_attention_scores=_scores_qk_norm_after_rope),
        ("attention_vs_eager",),
    ),
    Mutant(
        "wrong_final_norm",
        "smolvlm",
        "get_lm_norm returns the last layer's input norm",
        with_methods(get_lm_norm=_last_input_norm_as_final),
        ("logit_lens",),
    ),
    Mutant(
        "logit_mask_undeclared",
        "chameleon",
        "the image-code ids the model masks out of its logits are not declared (spec.logit_mask empty)",
        with_spec(logit_mask=None),
        ("logit_lens",),
    ),
    Mutant(
        "logit_mask_shifted",
        "chameleon",
        "get_logit_mask returns the masked ids shifted by one",
        with_methods(get_logit_mask=_logit_mask_shifted),
        ("logit_lens",),
    ),
    Mutant(
        "vq_image_token_shifted",
        "chameleon",
        "image token id off by one on a decoder that embeds its own input_ids (VQ codes)",
        with_methods(get_image_token_id=_shifted_image_token),
        ("image_token_count",),
    ),
    Mutant(
        "qkv_bias_dropped",
        "qwen2_5_vl",
        "recomputed q/k use the projection weight without its bias",
        with_methods(_project_heads=_project_heads_without_bias),
        ("attention_vs_eager",),
    ),
    Mutant(
        "head_dim_from_hidden",
        "qwen3_vl",
        "lm_head_dim = hidden // heads, ignoring the config's explicit head_dim",
        with_methods(lm_head_dim=property(_head_dim_from_hidden)),
        ("contract_shapes", "attention_vs_eager"),
    ),
    Mutant(
        "mlp_norm_is_input_norm",
        "smolvlm",
        "get_lm_mlp_norm returns the layer's input norm",
        with_methods(get_lm_mlp_norm=_input_norm_as_mlp_norm),
        ("hook_values_mlp_in",),
    ),
    Mutant(
        "mlp_pre_reads_up_proj",
        "qwen2_5_vl",
        "mlp.hook_pre captured at up_proj's output instead of gate_proj's",
        unchanged,
        ("hook_values_mlp_gate_up",),
        runtime=relocated_hook("mlp.hook_pre", HOOK_TYPES["mlp.hook_pre_linear"]),
    ),
    Mutant(
        "mlp_out_reads_resid_post",
        "llava",
        "mlp.hook_out captured at the decoder layer's output (residual added)",
        unchanged,
        ("hook_values_mlp_out",),
        runtime=relocated_hook("mlp.hook_out", HOOK_TYPES["hook_resid_post"]),
    ),
    # --- harness truth: hook values, generation, adapter recomputation details (helper H5 appends here)
    Mutant(
        "cached_pattern_1d_positions",
        "qwen3_vl",
        "recomputed attention hooks ignore the layer's position_embeddings (1-D positions, not M-RoPE)",
        unchanged,
        ("cached_patterns_vs_eager", "cached_patterns_during_generate"),
        runtime=computed_hooks_without("position_embeddings"),
    ),
    Mutant(
        "cached_pattern_without_padding_mask",
        "llava",
        "recomputed attention hooks drop the attention mask (causal only: padding keys attended)",
        unchanged,
        ("cached_patterns_vs_eager_padded_batch",),
        runtime=computed_hooks_without("attention_mask"),
    ),
    Mutant(
        "patch_next_layer",
        "qwen3_vl",
        "run_with_hooks attaches a patch on lm.blocks.i to layer i + 1",
        unchanged,
        ("patching_layer_locality",),
        runtime=_patches_on_next_layer,
    ),
    Mutant(
        "wildcard_skips_last_layer",
        "smolvlm",
        "lm.blocks.*.<hook> in run_with_hooks expands to every layer but the last",
        unchanged,
        ("patching_wildcard",),
        runtime=_wildcard_skips_last_layer,
    ),
    Mutant(
        "sdpa_mask_cast_to_float",
        "llava",
        "SDPA's boolean mask added as 1.0 / 0.0 (the pre-SDPA float handling): padding keys attended",
        _bool_mask_as(lambda mask: mask.float()),
        ("cached_patterns_vs_eager_padded_batch",),
    ),
    Mutant(
        "sdpa_mask_inverted",
        "qwen2_5_vl",
        "SDPA's boolean mask read the wrong way round (True taken as masked)",
        _bool_mask_as(lambda mask: torch.where(mask, torch.finfo(torch.float32).min, 0.0)),
        ("cached_patterns_vs_eager_padded_batch",),
    ),
    Mutant(
        "output_attentions_under_sdpa",
        "smolvlm",
        "forward(output_attentions=True) keeps SDPA, which returns no weights",
        unchanged,
        ("attention_vs_eager", "cached_patterns_vs_eager", "cached_patterns_during_generate"),
        runtime=_output_attentions_without_eager,
    ),
    # --- harness truth: cached attention and patching (helper H6 appends here)
    _flip("contiguous_image_tokens", "smolvlm"),
    _flip("supports_batching", "llava"),
    _flip("strict_residual_stream", "qwen3_vl"),
    Mutant(
        "mixed_size_batches_denied",
        "llava",
        "batches_mixed_image_sizes declared False for a processor that batches any image sizes",
        with_spec(batches_mixed_image_sizes=False),
        ("processor_mixed_size_batches",),
    ),
    # --- MLP kinds and attention variants (#9): fused projections, mixture of experts, gated queries
    Mutant(
        "fused_gate_up_halves_swapped",
        "glm4v",
        "the fused gate_up_proj split the wrong way round: mlp.hook_pre reads the up half",
        with_methods(output_part=_swapped_halves),
        ("mlp_decomposition",),
    ),
    Mutant(
        "experts_hook_on_shared_expert",
        "qwen3_5_moe",
        "spec.moe.experts names the shared expert (whose output the MoE block gates before adding it)",
        with_spec(moe__experts="shared_expert"),
        ("moe_decomposition",),
        # The tiny shared expert writes ~1e-2 and its sigmoid gate is ~0.5: a 5e-3 error, caught in fp32 only.
        float32_only=True,
    ),
    Mutant(
        "router_logits_softmaxed",
        "qwen3_vl_moe",
        "mlp.hook_router_logits returns the routing probabilities (softmax) instead of the logits",
        with_methods(compute_router_logits=_softmaxed_router_logits),
        ("moe_decomposition",),
    ),
    Mutant(
        "rotary_on_every_layer",
        "cohere2_vision",
        "RoPE applied on every layer, also on the full-attention layers that use none",
        with_spec(attention__rotary_condition=None),
        ("attention_vs_eager",),
    ),
    Mutant(
        "query_gate_ignored",
        "qwen3_5",
        "a gated q_proj ([query; gate] per head) treated as a plain query projection",
        with_spec(attention__query_gate=False),
        ("contract_shapes", "attention_vs_eager"),
    ),
    Mutant(
        "qkv_layout_as_blocks",
        "fuyu",
        "a fused query_key_value interleaved per head ([q; k; v] per head) split as [Q; K; V] blocks",
        with_spec(attention__qkv_layout="blocks"),
        ("attention_vs_eager",),
    ),
    Mutant(
        "fused_qkv_query_reads_key",
        "fuyu",
        "the fused q/k/v split off by one part: attn.hook_q and the recomputed scores read the keys",
        with_methods(output_part=_query_reads_key_part),
        ("attention_vs_eager",),
    ),
    Mutant(
        "partial_rotary_on_last_dims",
        "fuyu",
        "partial rotary rotates the last rotary-width dims of each head instead of the first",
        with_methods(_apply_rotary=_rotary_on_last_dims),
        ("attention_vs_eager",),
    ),
    # --- image positions from a processor mask, attention output norms, generation declarations (#9)
    Mutant(
        "image_position_mask_misnamed",
        "llava",
        "image_token.position_mask names a processor output that marks other positions (the attention mask)",
        with_spec(image_token__position_mask="attention_mask"),
        ("image_token_count",),
    ),
    Mutant(
        "attention_output_norm_misdeclared",
        "llava",
        "attention.output_norm names a module the attention does not apply before o_proj (its q_proj)",
        with_spec(attention__output_norm="q_proj"),
        ("hook_values_attention",),
    ),
    Mutant(
        "batched_generation_denied",
        "llava",
        "generates_batches declared False for a model whose batched generation matches single generation",
        with_spec(generates_batches=False),
        ("generation_batch_parity",),
    ),
    Mutant(
        "image_requirement_invented",
        "llava",
        "requires_image declared True for a model that runs prompts without an image",
        with_spec(requires_image=True),
        ("model_requires_image",),
    ),
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
    width = max(len(mutant.name) for mutant in MUTANTS) + 2
    print(f"{'mutant':<{width}}{'family':<12}{'expected':<10}caught by")
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
            f"{mutant.name:<{width}}{mutant.family:<12}{'yes' if ok else 'NO':<10}{', '.join(failed)}"
            f"  ({time.perf_counter() - started:.1f}s)"
        )
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
