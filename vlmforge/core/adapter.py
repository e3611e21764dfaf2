"""The adapter contract (VLM Spectra's ``ModelAdapter`` surface), implemented once.

A family subclasses :class:`ModelAdapter` and sets ``spec`` to its :class:`FamilySpec`; every method
here reads the spec, so a family module holds no logic of its own unless its architecture truly
differs (then it overrides the one method that differs).

Shapes used throughout (as in ``modeling_llama.py``):
    B = batch, L = sequence length, D = hidden size, H = attention heads, H_kv = key/value heads,
    d_h = head dim.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar

import torch
import transformers
from torch import nn

from vlmforge.core.errors import ContractError
from vlmforge.core.hooks import HOOK_TYPES
from vlmforge.core.processing import VLMProcessor
from vlmforge.core.roles import (
    ATTENTION,
    DOWN_PROJ,
    EXPERTS,
    FINAL_NORM,
    FUSED_QKV,
    GATE_PROJ,
    INPUT_NORM,
    K_PROJ,
    LAYER,
    LM_HEAD,
    MLP,
    MLP_NORM,
    O_PROJ,
    Q_PROJ,
    ROUTER,
    UP_PROJ,
    V_PROJ,
    Role,
)
from vlmforge.core.spec import FamilySpec


def in_token_layout(output: Any, module_input: Any) -> Any:
    """A module's output (the first tensor of a tuple) in the ``[B, L, D]`` token layout of its input.

    A mixture-of-experts block may route a flat token list and return it flat (Llama 4's returns
    ``([B * L, D], router_logits)``; its decoder layer views it back as ``[B, L, D]``): ``mlp.hook_out``
    shows the MLP output as the residual stream receives it. Anything not flattened so comes back as is.
    """
    output = output[0] if isinstance(output, tuple | list) else output
    source = module_input[0] if isinstance(module_input, tuple | list) else module_input
    if (
        isinstance(output, torch.Tensor)
        and isinstance(source, torch.Tensor)
        and output.dim() == 2
        and source.dim() == 3
        and output.shape[0] == source.shape[0] * source.shape[1]
    ):
        return output.view(*source.shape[:2], output.shape[-1])
    return output


def resolve_attribute(root: Any, dotted_path: str, *, what: str) -> Any:
    """Follow ``dotted_path`` from ``root``; a miss raises :class:`ContractError` naming the hop."""
    node = root
    walked: list[str] = []
    for part in dotted_path.split("."):
        if not hasattr(node, part):
            available = sorted(name for name, _ in getattr(node, "named_children", list)())
            raise ContractError(
                f"{what}: {type(root).__name__}.{'.'.join([*walked, part])} does not exist "
                f"({type(node).__name__} has children {available}). Fix the path in the family spec."
            )
        node = getattr(node, part)
        walked.append(part)
    return node


def _has_path(root: Any, dotted_path: str) -> bool:
    """Whether ``dotted_path`` resolves from ``root`` (the predicate form of :func:`resolve_attribute`)."""
    try:
        resolve_attribute(root, dotted_path, what=dotted_path)
    except ContractError:
        return False
    return True


def _below(role: Role, ancestor: Role) -> bool:
    """Whether ``role`` is ``ancestor`` or resolved from it (q_proj is below the attention)."""
    node: Role | None = role
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _condition_holds(module: Any, condition: str) -> bool:
    """Whether ``condition`` (attributes of ``module`` joined by ``and``, each optionally ``not``) holds;
    a missing attribute reads as falsy."""
    for test in condition.split(" and "):
        test = test.strip()
        negated = test.startswith("not ")
        value = bool(getattr(module, test.removeprefix("not ").strip(), None))
        if value == negated:
            return False
    return True


def import_dotted(path: str) -> Any:
    """Import ``package.module.attribute`` and return the attribute."""
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ContractError(f"cannot import {path!r}: {error}") from error


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, H_kv, L, d_h] -> [B, H_kv * n_rep, L, d_h], each kv head repeated for its query group."""
    if n_rep == 1:
        return states
    batch, kv_heads, length, head_dim = states.shape
    expanded = states[:, :, None, :, :].expand(batch, kv_heads, n_rep, length, head_dim)
    return expanded.reshape(batch, kv_heads * n_rep, length, head_dim)


def causal_mask(
    batch: int,
    length: int,
    dtype: torch.dtype,
    device: torch.device,
    sliding_window: int | None = None,
    *,
    past_length: int = 0,
    masked_value: float | None = None,
) -> torch.Tensor:
    """Additive causal mask ``[B, 1, L, past + L]``: 0 where attended, ``masked_value`` elsewhere.

    Query ``i`` sits at position ``past_length + i`` and attends keys ``0 .. past_length + i``
    (within ``sliding_window``, if any). ``masked_value`` defaults to ``finfo(dtype).min``, as eager
    uses; a standalone mask handed to SDPA may use ``-inf``.
    """
    query = torch.arange(length, device=device)[:, None] + past_length
    key = torch.arange(past_length + length, device=device)[None, :]
    allowed = key <= query
    if sliding_window is not None:
        allowed &= query - key < sliding_window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min if masked_value is None else masked_value)
    return mask[None, None].expand(batch, 1, *allowed.shape)


def additive_mask(
    attention_mask: torch.Tensor | None, scores: torch.Tensor, sliding_window: int | None = None
) -> torch.Tensor:
    """The mask a layer received, as the additive fp32 mask eager attention adds to ``scores``.

    Each attention implementation hands the layer its own form of the same mask:

    * ``None`` — SDPA with no padding (causal via ``is_causal``): the causal mask is built, windowed
      when the layer has a ``sliding_window``;
    * boolean ``[B, 1, Lq, Lk]`` — SDPA: ``True`` where attended, mapped to 0 / ``finfo.min``, which
      is exactly how transformers derives eager's mask from it;
    * floating ``[B, 1, Lq, Lk]`` — eager: already additive, cut to the key length.

    Args:
        attention_mask: the ``attention_mask`` keyword the attention module received.
        scores: ``[B, H, Lq, Lk]`` pre-mask scores (fp32) the mask will be added to.
        sliding_window: the layer's window, used only to build the ``None`` case.
    """
    if attention_mask is None:
        return causal_mask(scores.shape[0], scores.shape[-1], torch.float32, scores.device, sliding_window)
    if not isinstance(attention_mask, torch.Tensor):
        raise ContractError(
            f"the attention layer received a {type(attention_mask).__name__} mask; recomputed patterns "
            "support eager / SDPA masks (None, bool or float tensors): load the model with "
            'attn_implementation="sdpa" or "eager"'
        )
    attention_mask = attention_mask[..., : scores.shape[-1]]
    if attention_mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=torch.float32, device=attention_mask.device)
        return torch.where(attention_mask, zero, torch.finfo(torch.float32).min)
    return attention_mask.float()


class _FromSpec:
    """A class attribute computed from the adapter class's ``spec`` when read."""

    def __init__(self, compute: Callable[[type], Any], doc: str) -> None:
        self.compute = compute
        self.__doc__ = doc

    def __get__(self, instance: Any, owner: type) -> Any:
        if not hasattr(owner, "spec"):
            raise AttributeError(f"{owner.__name__} has no `spec`, so no {self.__doc__}")
        return self.compute(owner)


class ModelAdapter:
    """Uniform access to a VLM's language model for interpretability tooling.

    Args:
        model: the Hugging Face ``*ForConditionalGeneration`` model.

    Class attributes (VLM Spectra's): ``SUPPORTED_MODELS`` (the family's checkpoint ids, set on
    registration), ``MODEL_CLASS`` (the transformers model class) and ``PROCESSOR_CLASS``
    (``transformers.AutoProcessor``); both load through ``.from_pretrained``.
    """

    spec: ClassVar[FamilySpec]
    MODEL_CLASS: ClassVar[Any] = _FromSpec(
        lambda cls: getattr(transformers, cls.spec.model_class), "transformers model class"
    )
    PROCESSOR_CLASS: ClassVar[Any] = _FromSpec(lambda cls: transformers.AutoProcessor, "processor class")
    #: The prompt processor this family uses. The generic one reads ``spec.prompt``; a family whose
    #: prompting truly differs names its own subclass here (nothing chooses processors by name).
    processor_class: ClassVar[type[VLMProcessor]] = VLMProcessor

    def __init__(self, model: nn.Module) -> None:
        if not hasattr(type(self), "spec"):
            raise TypeError(f"{type(self).__name__} must set the class attribute `spec` (a FamilySpec)")
        self.model = model
        #: The tokenizer, when known (HookedVLM sets it): image-token lookup by string falls back to it.
        self.tokenizer: Any | None = None
        #: The Hugging Face processor, when known (``set_processor``; HookedVLM sets it).
        self.processor: Any | None = None
        # The model keeps its own attention implementation (SDPA on most checkpoints): patterns are
        # recomputed from the layer's inputs, whatever mask form that implementation hands the layer.
        self._language_model = resolve_attribute(model, self.spec.language_model, what="language model")
        #: The attention implementation the language model was loaded with (restored after eager calls).
        #: The decoder's own: a composite model may run another one elsewhere (GOT-OCR2's vision tower
        #: has no SDPA, so its top-level config says eager while the Qwen2 decoder runs SDPA).
        decoder_config = getattr(self._language_model, "config", None) or getattr(model, "config", None)
        self._original_attn_impl: str = getattr(decoder_config, "_attn_implementation", None) or "sdpa"

    def set_processor(self, processor: Any) -> None:
        """Store the Hugging Face processor (and its tokenizer, for the image-token lookup)."""
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            self.tokenizer = tokenizer

    @property
    def language_model(self) -> nn.Module:
        """The decoder that owns ``layers`` and the final norm."""
        return self._language_model

    @cached_property
    def lm_config(self) -> Any:
        """The text config (the decoder's own config)."""
        return self._language_model.config

    # -------------------------------------------------------- capability flags
    @property
    def has_strict_residual_stream(self) -> bool:
        return self.spec.capabilities.strict_residual_stream

    # ----------------------------------------------------------- module access
    # Each accessor is the VLM Spectra method of one row of the role table (vlmforge.core.roles).
    # `module` dispatches through the accessors, so a family overriding one (its layers live elsewhere)
    # moves every role below it; the default accessors resolve the spec path in `_resolve`.
    def module(self, role: Role, layer: int | None = None) -> nn.Module:
        """The module playing ``role`` (in decoder layer ``layer`` for per-layer roles).

        Raises:
            ContractError: the family declares no such module, or its spec path does not resolve.
            IndexError: ``layer`` is out of range.
        """
        accessor = getattr(self, role.accessor)
        return accessor(layer) if role.per_layer else accessor()

    def absence(self, role: Role, layer: int | None = None) -> str | None:
        """Why ``role`` has no module (in decoder layer ``layer``), or ``None`` when it has one.

        A family may declare no such module at all (a non-gated MLP has no gate_proj), and per layer a
        mixture-of-experts MLP has no dense projections while a dense MLP has no router or experts.
        """
        if role.optional and role.declared_path(self.spec) is None:
            return f"the {self.spec.name} family declares no {role.name} (spec.{role.spec_path} is empty)"
        if layer is not None and self.is_cross_attention_layer(layer) and _below(role, ATTENTION):
            # The layer attends to the image features instead of to the tokens: its module has keys from
            # another sequence, so there is no token-to-token pattern to hook or recompute.
            return (
                f"layer {layer} is a cross-attention layer (its {self.spec.modules.cross_attention} attends "
                f"to the image features, not to the tokens): it has no {role.name}"
            )
        if layer is not None and self.spec.attention.hybrid and _below(role, ATTENTION):
            layers = self.lm_layers
            if 0 <= layer < len(layers) and not _has_path(layers[layer], self.spec.modules.attention):
                kinds = getattr(self.lm_config, "layer_types", None)
                kind = (
                    f"a {kinds[layer]} layer"
                    if isinstance(kinds, list | tuple) and layer < len(kinds)
                    else ""
                )
                return (
                    f"layer {layer} is {kind or 'a layer'} without softmax attention (no "
                    f"{self.spec.modules.attention}): it has no {role.name}"
                )
        if layer is not None and role in (K_PROJ, V_PROJ) and self.is_kv_shared_layer(layer):
            return (
                f"layer {layer} attends with another layer's keys and values (spec.attention.kv_shared = "
                f"{self.spec.attention.kv_shared!r} holds there): it has no {role.name}"
            )
        if role.moe is not None and layer is not None:
            moe = self.is_moe_layer(layer)
            if role.moe == "dense" and moe:
                return f"layer {layer}'s MLP is a mixture of experts: it has no dense {role.name}"
            if role.moe == "moe" and not moe:
                return f"layer {layer}'s MLP is dense: it has no {role.name}"
        return None

    def is_kv_shared_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` attends with keys / values another layer computed
        (``spec.attention.kv_shared`` holds on its attention module)."""
        condition = self.spec.attention.kv_shared
        layers = self.lm_layers
        return (
            condition is not None
            and 0 <= layer < len(layers)
            and _has_path(layers[layer], self.spec.modules.attention)
            and self._attention_condition(layer, condition)
        )

    def recompute_absence(self, layer: int) -> str | None:
        """Why ``layer``'s scores and patterns cannot be recomputed from its own input (None: they can).

        A layer attending with another layer's keys (``spec.attention.kv_shared``) has no key projection
        of its own: its keys come from a store the decoder fills during the pass, not from its input.
        """
        if self.is_kv_shared_layer(layer):
            return (
                f"layer {layer} attends with the keys and values of another layer "
                f"(spec.attention.kv_shared = {self.spec.attention.kv_shared!r}): its scores and patterns "
                "are not recomputed from its own input"
            )
        return None

    def is_cross_attention_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` attends to the image through ``spec.modules.cross_attention``
        in place of self-attention (it has the cross-attention module and not the attention module)."""
        cross = self.spec.modules.cross_attention
        layers = self.lm_layers
        return (
            cross is not None
            and 0 <= layer < len(layers)
            and _has_path(layers[layer], cross)
            and not _has_path(layers[layer], self.spec.modules.attention)
        )

    @property
    def cross_attention_layers(self) -> list[int]:
        """The decoder layers the image reaches the language model through (empty: through the input
        embeddings), see :meth:`is_cross_attention_layer`."""
        return [layer for layer in range(len(self.lm_layers)) if self.is_cross_attention_layer(layer)]

    @property
    def cross_attention_blocks(self) -> nn.ModuleList | None:
        """The decoder's own list of cross-attention blocks, applied between its layers (spec
        ``modules.cross_attention_blocks``: Flamingo / IDEFICS); None where the spec declares none or the
        decoder has no such attribute (the contract check reports a declared path that does not resolve)."""
        path = self.spec.modules.cross_attention_blocks
        if path is None or not _has_path(self._language_model, path):
            return None
        return resolve_attribute(self._language_model, path, what="cross-attention blocks")

    def image_cross_attention(self) -> str | None:
        """How the image reaches the decoder through cross-attention, in words; None where it arrives
        through the input embeddings.

        Either some decoder layers attend to the image in place of the tokens (``modules.cross_attention``)
        or the decoder applies its own cross-attention blocks between the layers
        (``modules.cross_attention_blocks``). Both are found on the built model, so a spec declaring a
        module the model lacks gives None, and the checks on the input embeddings then run (and fail).
        """
        layers = self.cross_attention_layers
        if layers:
            return (
                f"cross-attention layers {', '.join(map(str, layers))} ({self.spec.modules.cross_attention})"
            )
        blocks = self.cross_attention_blocks
        if blocks is not None and len(blocks):
            return (
                f"{len(blocks)} cross-attention blocks ({self.spec.modules.cross_attention_blocks}) the "
                "decoder applies between its layers"
            )
        return None

    def is_moe_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer``'s MLP is a mixture of experts (it has ``spec.moe.experts``)."""
        experts = self.spec.moe.experts
        return experts is not None and _has_path(self.get_lm_mlp(layer), experts)

    def output_part(self, role: Role) -> tuple[Callable[..., torch.Tensor], Callable[..., None]] | None:
        """``(read, write)`` when ``role``'s activation is only part of its module's output, else None.

        ``read(output)`` returns the part ``[..., width]``; ``write(output, value)`` writes ``value``
        into that part of ``output`` in place. Parts: the active residual stream of a decoder layer's stacked
        input / output (``spec.active_stream``), this role's half of a fused ``gate_up_proj``
        (``[..., 2F]``: gate first), its q / k / v part of a fused ``qkv_proj`` (laid out as
        ``spec.attention.qkv_layout`` says), and the query half of a gated query
        (``[..., H * 2 * d_h]``, per head ``[query; gate]``).
        """
        if role is LAYER:
            # The residual stream is the decoder layer's input / output, or one stream of a stack of them.
            return None if self.spec.active_stream is None else self._residual_part()
        half = role.fused_half(self.spec)
        if half is not None and role.fused is not None and role.fused[0] == FUSED_QKV:
            return self._qkv_part(half)
        if half is not None:

            def halves(output: torch.Tensor) -> torch.Tensor:
                width = output.shape[-1] // 2
                return output[..., half * width : (half + 1) * width]

            def write_half(output: torch.Tensor, value: torch.Tensor) -> None:
                halves(output).copy_(value)

            return halves, write_half
        if role is Q_PROJ and self.spec.attention.query_gate:
            head_dim = self.lm_head_dim

            def per_head(output: torch.Tensor) -> torch.Tensor:  # [..., H * 2 d_h] -> [..., H, d_h] view
                return output.view(*output.shape[:-1], -1, 2 * head_dim)[..., :head_dim]

            def read_query(output: torch.Tensor) -> torch.Tensor:
                return per_head(output).flatten(-2)

            def write_query(output: torch.Tensor, value: torch.Tensor) -> None:
                per_head(output).copy_(value.view(*value.shape[:-1], -1, head_dim))

            return read_query, write_query
        return None

    @cached_property
    def active_stream(self) -> int | None:
        """Index of the residual stream the residual hooks show (``spec.active_stream``), or None where the
        decoder layers pass one [B, L, D] stream.

        Raises:
            ContractError: the declared text-config attribute is missing or holds no index.
        """
        attribute = self.spec.active_stream
        if attribute is None:
            return None
        value = resolve_attribute(self.lm_config, attribute, what=f"{self.spec.name} active residual stream")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ContractError(
                f"{self.spec.name}: text config {attribute} = {value!r} is no stream index; fix "
                "spec.active_stream"
            )
        return value

    def residual_view(self, states: torch.Tensor) -> torch.Tensor:
        """The residual stream as the hooks show it: ``states`` itself, or where the decoder layers pass
        parallel streams stacked on a leading axis (``spec.active_stream``), the active one: [N, B, L, D]
        -> [B, L, D] (a view)."""
        index = self.active_stream
        if index is None or states.dim() != 4:
            return states
        return states[index]

    def _residual_part(self) -> tuple[Callable[..., torch.Tensor], Callable[..., None]]:
        """``(read, write)`` of the active stream in a decoder layer's stacked input / output."""

        def write(states: torch.Tensor, value: torch.Tensor) -> None:
            self.residual_view(states).copy_(value)

        return self.residual_view, write

    def _qkv_part(self, part: int) -> tuple[Callable[..., torch.Tensor], Callable[..., None]]:
        """``(read, write)`` of q (``part`` 0), k (1) or v (2) in a fused q/k/v projection's output.

        ``"blocks"``: ``[Q; K; V]`` of widths ``H d_h``, ``H_kv d_h``, ``H_kv d_h``. ``"per_head"``: per
        key/value head its ``H / H_kv`` query heads, then its key, then its value
        (``[..., H_kv, H / H_kv + 2, d_h]``).
        """
        head_dim, heads, kv_heads = self.lm_head_dim, self.lm_num_heads, self.lm_num_kv_heads
        group = heads // kv_heads
        if self.spec.attention.qkv_layout == "per_head":
            rows = slice(0, group) if part == 0 else slice(group + part - 1, group + part)

            def grouped(output: torch.Tensor) -> torch.Tensor:  # [..., H_kv, rows, d_h] view
                return output.view(*output.shape[:-1], kv_heads, group + 2, head_dim)[..., rows, :]

            def read_grouped(output: torch.Tensor) -> torch.Tensor:
                return grouped(output).flatten(-3)

            def write_grouped(output: torch.Tensor, value: torch.Tensor) -> None:
                view = grouped(output)
                view.copy_(value.view(view.shape))

            return read_grouped, write_grouped
        widths = (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim)
        start = sum(widths[:part])

        def block(output: torch.Tensor) -> torch.Tensor:
            return output[..., start : start + widths[part]]

        def write_block(output: torch.Tensor, value: torch.Tensor) -> None:
            block(output).copy_(value)

        return block, write_block

    def project(self, role: Role, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """``role``'s projection of ``hidden_states`` in ``layer``.

        The module's output, or this role's half of a fused projection's output (a fused ``gate_up_proj``
        returns [..., 2F]: gate = [..., :F], up = [..., F:]).
        """
        output = self.module(role, layer)(hidden_states)
        part = self.output_part(role)
        return output if part is None else part[0](output)

    def _resolve(self, role: Role, layer: int | None = None) -> nn.Module:
        """Default accessor body: follow the role's spec path from its parent role (or its scope)."""
        if role.scope == "layers":
            layers = self.lm_layers
            if layer is None or not -len(layers) <= layer < len(layers):
                raise IndexError(f"layer {layer} out of range: the language model has {len(layers)} layers")
            return layers[layer]
        path = role.declared_path(self.spec)
        absent = self.absence(role, layer)
        if path is None or absent is not None:
            raise ContractError(absent or f"the {self.spec.name} family declares no {role.name} module")
        if role.parent is not None:
            root = self.module(role.parent, layer)
        else:
            root = self.model if role.scope == "model" else self._language_model
        return resolve_attribute(root, path, what=role.name)

    def _every_layer(self, role: Role) -> list[nn.Module | None]:
        """The role's module in every layer; ``None`` where the layer has none (a hybrid decoder's
        linear-attention layers have no attention)."""
        return [
            None if self.absence(role, layer) is not None else self.module(role, layer)
            for layer in range(len(self.lm_layers))
        ]

    @property
    def lm_layers(self) -> nn.ModuleList:
        return resolve_attribute(self._language_model, self.spec.modules.layers, what="decoder layers")

    @property
    def lm_attn(self) -> list[nn.Module]:
        return self._every_layer(ATTENTION)

    @property
    def lm_o_proj(self) -> list[nn.Module]:
        return self._every_layer(O_PROJ)

    @property
    def lm_mlp(self) -> list[nn.Module]:
        return self._every_layer(MLP)

    def get_lm_layer(self, layer: int) -> nn.Module:
        return self._resolve(LAYER, layer)

    def get_lm_attn(self, layer: int) -> nn.Module:
        return self._resolve(ATTENTION, layer)

    def get_lm_mlp(self, layer: int) -> nn.Module:
        return self._resolve(MLP, layer)

    def run_lm_mlp(self, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """The MLP of decoder layer ``layer`` on ``hidden_states`` ``[B, L, D]``, as ``mlp.hook_out`` shows
        its output: the tensor (not a ``(output, router_logits)`` tuple), in the input's token layout."""
        return in_token_layout(self.get_lm_mlp(layer)(hidden_states), hidden_states)

    def get_lm_input_norm(self, layer: int) -> nn.Module:
        """The norm producing the attention's input (``attn.hook_in``) in decoder layer ``layer``."""
        return self._resolve(INPUT_NORM, layer)

    def get_lm_mlp_norm(self, layer: int) -> nn.Module:
        """The norm producing the MLP's input (``mlp.hook_in``) in decoder layer ``layer``."""
        return self._resolve(MLP_NORM, layer)

    def get_lm_q_proj(self, layer: int) -> nn.Module:
        return self._resolve(Q_PROJ, layer)

    def get_lm_k_proj(self, layer: int) -> nn.Module:
        return self._resolve(K_PROJ, layer)

    def get_lm_v_proj(self, layer: int) -> nn.Module:
        return self._resolve(V_PROJ, layer)

    def get_lm_o_proj(self, layer: int) -> nn.Module:
        return self._resolve(O_PROJ, layer)

    def get_lm_gate_proj(self, layer: int) -> nn.Module:
        return self._resolve(GATE_PROJ, layer)

    def get_lm_up_proj(self, layer: int) -> nn.Module:
        return self._resolve(UP_PROJ, layer)

    def get_lm_down_proj(self, layer: int) -> nn.Module:
        return self._resolve(DOWN_PROJ, layer)

    def get_lm_router(self, layer: int) -> nn.Module:
        """The router of a mixture-of-experts MLP (``mlp.hook_router_logits``)."""
        return self._resolve(ROUTER, layer)

    def get_lm_experts(self, layer: int) -> nn.Module:
        """The routed experts of a mixture-of-experts MLP (``mlp.hook_experts_out``)."""
        return self._resolve(EXPERTS, layer)

    def compute_router_logits(self, hidden_states: torch.Tensor, layer: int) -> torch.Tensor:
        """Router logits [..., n_experts] of ``layer``'s MoE MLP for its input ``hidden_states``.

        Recomputed from the router's linear weight (routers return logits in different places of their
        output tuple, and some only return the post-top-k scores).
        """
        router = self.get_lm_router(layer)
        weight = getattr(router, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ContractError(
                f"{self.spec.name}: the router {type(router).__name__} of layer {layer} has no linear weight "
                "[n_experts, D]; router logits cannot be recomputed"
            )
        with torch.no_grad():
            return torch.nn.functional.linear(
                hidden_states.to(weight.dtype), weight, getattr(router, "bias", None)
            )

    def gate_activation_input(self, gate: torch.Tensor, layer: int) -> torch.Tensor:
        """What ``layer``'s MLP activation reads, given the gate projection's output ``gate``.

        ``gate`` itself, or on the layers where ``spec.modules.gate_transform_condition`` holds, the MLP's own
        ``gate_transform`` method applied to it (Gemma3n's top-k sparsification of the gate).
        """
        transform = self.spec.modules.gate_transform
        if transform is None:
            return gate
        mlp = self.get_lm_mlp(layer)
        condition = self.spec.modules.gate_transform_condition
        if condition is not None and not _condition_holds(mlp, condition):
            return gate
        return resolve_attribute(mlp, transform, what="gate transform")(gate)

    def get_lm_norm(self) -> nn.Module:
        return self._resolve(FINAL_NORM)

    def get_lm_head(self) -> nn.Module:
        return self._resolve(LM_HEAD)

    def get_logit_mask(self) -> torch.Tensor | None:
        """The token ids whose logits the model's forward pins to the dtype minimum (``spec.logit_mask``).

        ``None`` when the family declares no mask (its logits are ``lm_head``'s output). Read from the
        model each call: the ids live wherever the model keeps them (Chameleon: its vocabulary mapping).

        Raises:
            ContractError: the declared path is missing or does not hold token ids.
        """
        if self.spec.logit_mask is None:
            return None
        ids = resolve_attribute(self.model, self.spec.logit_mask, what="logit mask")
        # A flat integer tensor or sequence only: a mapping would give its keys, a nested one a grid.
        flat = isinstance(ids, torch.Tensor) and ids.dim() == 1 and not ids.is_floating_point()
        flat = flat or (
            isinstance(ids, (list, tuple, range))
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        )
        if not flat:
            raise ContractError(
                f"{self.spec.name}: spec.logit_mask {self.spec.logit_mask!r} holds {type(ids).__name__}, "
                "not token ids (a 1-D integer tensor or a list of ints)"
            )
        return torch.as_tensor(ids, dtype=torch.long)

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` [..., vocab] with the declared masked ids at the dtype minimum, as the model does.

        A copy (the input is not modified); ``logits`` itself when the family declares no mask. A logit
        lens goes through this so that its last layer shows what the model predicts.
        """
        mask = self.get_logit_mask()
        if mask is None:
            return logits
        masked = logits.clone()
        masked[..., mask.to(logits.device)] = torch.finfo(logits.dtype).min
        return masked

    # -------------------------------------------------------------- dimensions
    def _config_int(self, *names: str) -> int:
        for name in names:
            value = getattr(self.lm_config, name, None)
            if value is not None:
                return int(value)
        raise ContractError(f"text config {type(self.lm_config).__name__} has none of {names}")

    @property
    def lm_num_layers(self) -> int:
        return self._config_int("num_hidden_layers", "n_layers", "num_layers")

    @property
    def lm_num_heads(self) -> int:
        return self._config_int("num_attention_heads", "n_heads")

    @property
    def lm_num_kv_heads(self) -> int:
        value = getattr(self.lm_config, "num_key_value_heads", None)
        return int(value) if value is not None else self.lm_num_heads

    @property
    def lm_hidden_dim(self) -> int:
        return self._config_int("hidden_size", "d_model", "n_embd")

    @property
    def lm_head_dim(self) -> int:
        # An explicit head_dim wins: Qwen3 configs set it independently of hidden / heads.
        explicit = getattr(self.lm_config, "head_dim", None)
        return int(explicit) if explicit is not None else self.lm_hidden_dim // self.lm_num_heads

    @property
    def lm_mlp_dim(self) -> int:
        """The decoder's MLP width (``F`` of ``mlp.hook_pre``/``hook_post``).

        An all-MoE decoder's config may only size its experts (``moe_intermediate_size``). A config may list
        one width per layer (Gemma3n's ``intermediate_size``); when every layer has the same width that is
        ``F``, and layers of different widths have no single one (an error saying so, not a wrong value).
        """
        names = ("intermediate_size", "ffn_dim", "n_inner", "moe_intermediate_size")
        value = next((v for name in names if (v := getattr(self.lm_config, name, None)) is not None), None)
        if isinstance(value, list | tuple):
            widths = sorted({int(v) for v in value})
            if len(widths) != 1:
                raise ContractError(
                    f"{self.spec.name}: the decoder's MLP widths differ by layer ({widths}): there is no "
                    "single lm_mlp_dim"
                )
            return widths[0]
        return self._config_int(*names)

    # ------------------------------------------------------------ image token
    def get_image_token_id(self) -> int:
        """The id of the image-placeholder token, read where the spec's ``image_token`` says.

        Raises:
            ContractError: no id found; for a family whose image positions come from a processor output
                (``image_token.position_mask``) the message says so: it has no single image token.
        """
        source = self.spec.image_token
        if source.position_mask is not None and source.config_attribute is None and source.token is None:
            raise ContractError(
                f"{self.spec.name} has no single image token id: its image positions come from the "
                f"processor output {source.position_mask!r} (use image_token_mask(inputs))"
            )
        if source.config_attribute is not None:
            for config in (self.model.config, self.lm_config):
                value = getattr(config, source.config_attribute, None)
                if value is not None:
                    return int(value)
        tokenizer = getattr(self, "tokenizer", None)
        if source.token is not None and tokenizer is not None:
            token_id = tokenizer.convert_tokens_to_ids(source.token)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                return int(token_id)
        raise ContractError(
            f"{self.spec.name}: no image token id (config attribute {source.config_attribute!r}, "
            f"token {source.token!r}); set image_token in the family spec"
        )

    def image_token_mask(self, inputs: Any) -> torch.Tensor:
        """``[B, L]`` (or ``[L]`` for 1-D ids) bool: the image-feature positions of processed ``inputs``.

        The positions of ``get_image_token_id()`` in ``input_ids``, or, where the family declares
        ``image_token.position_mask``, that processor output (then ``inputs`` must be the processor's
        whole output, not only its ``input_ids``). Everything that locates image tokens goes through this.

        Raises:
            ContractError: the declared mask is missing from ``inputs`` or not shaped like ``input_ids``.
        """
        key = self.spec.image_token.position_mask
        input_ids = inputs["input_ids"] if isinstance(inputs, Mapping) else inputs
        if key is None:
            return input_ids == self.get_image_token_id()
        mask = inputs.get(key) if isinstance(inputs, Mapping) else None
        if mask is None:
            raise ContractError(
                f"{self.spec.name}: image positions come from the processor output {key!r}, which these "
                "inputs lack: pass the processor's whole output, not only input_ids"
            )
        mask = torch.as_tensor(mask).to(input_ids.device)
        if mask.shape != input_ids.shape:
            raise ContractError(
                f"{self.spec.name}: processor output {key!r} has shape {tuple(mask.shape)}, input_ids "
                f"{tuple(input_ids.shape)}; fix image_token.position_mask in the family spec"
            )
        return mask.bool()

    def get_image_marker_token_ids(self) -> tuple[int, ...]:
        """Ids of the marker tokens whose input embeddings the vision side writes besides the image tokens.

        Read from the config attribute the spec's ``image_token.marker_ids_attribute`` names (an int or a
        list of ints); empty when the family declares none. These positions are no image features (the
        image-token positions are still exactly ``get_image_token_id()``'s), only structure markers such
        as Ovis2's visual indicators.

        Raises:
            ContractError: the declared attribute is missing or holds no token id(s).
        """
        path = self.spec.image_token.marker_ids_attribute
        if path is None:
            return ()
        value = resolve_attribute(self.model.config, path, what=f"{self.spec.name} image marker token ids")
        values = (value,) if isinstance(value, int) else value
        if not (
            isinstance(values, (list, tuple))
            and values
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        ):
            raise ContractError(
                f"{self.spec.name}: config.{path} = {value!r} is not a token id or a list of token ids; "
                "fix image_token.marker_ids_attribute in the family spec"
            )
        return tuple(int(v) for v in values)

    # --------------------------------------------------- attention recomputation
    @cached_property
    def _rotary(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
        path = self.spec.attention.rotary_function
        return None if path is None else import_dotted(path)

    def _repeat_kv(self, states: torch.Tensor, n_rep: int) -> torch.Tensor:
        """GQA: expand key heads to the query heads (each kv head serves ``n_rep`` consecutive queries)."""
        return repeat_kv(states, n_rep)

    def _scaling(self, attn: nn.Module) -> float:
        scaling = getattr(attn, self.spec.attention.scaling, None)
        return float(scaling) if scaling is not None else self.lm_head_dim**-0.5

    def _project_heads(
        self,
        projection: nn.Module,
        attn: nn.Module,
        norm: str | None,
        hidden_states: torch.Tensor,
        part: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """[B, L, D] -> [B, heads, L, d_h] through the projection (and its q/k norm, if any).

        The norm runs at the width it was built for: per head (``d_h`` wide, Qwen3 style) after the head
        split, or over the whole projection (``heads * d_h`` wide, OLMo style) before it.
        """
        batch, length, _ = hidden_states.shape
        states = projection(hidden_states)
        if part is not None:
            states = part(states)  # e.g. the query half of a gated query
        norm_module = self._qk_norm_module(attn, norm)
        width = getattr(getattr(norm_module, "weight", None), "shape", (None,))[0]
        if norm_module is not None and width == states.shape[-1] != self.lm_head_dim:
            states = norm_module(states)  # a norm over the whole projection
            norm_module = None
        states = states.view(batch, length, -1, self.lm_head_dim)
        if norm_module is not None:
            states = norm_module(states)
        return states.transpose(1, 2)

    def _qk_norm_module(self, attn: nn.Module, norm: str | None) -> nn.Module | None:
        """The q/k norm module named ``norm`` on ``attn``; None for no norm, or, where the recipe declares
        ``norms_where_present``, for an attention without it (the forward tests ``hasattr`` itself)."""
        if norm is None or (self.spec.attention.norms_where_present and not _has_path(attn, norm)):
            return None
        return resolve_attribute(attn, norm, what=norm)

    def _apply_rotary(
        self, query: torch.Tensor, key: torch.Tensor, position_embeddings: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE on [B, H, L, d_h] q/k through the family's own function, in its calling convention.

        With ``(cos, sin)`` narrower than the head (partial rotary), the first ``cos.shape[-1]`` dims rotate
        and the rest pass through, as partial-rotary attention slices them (Persimmon slices before calling
        the Llama function; Glm4v / Qwen3.5 slice inside theirs, where the slice is then a no-op).
        """
        rotary = self._rotary
        assert rotary is not None
        if self.spec.attention.rotary_convention == "freqs_tokens_first":
            # f(q, k, freqs) on [B, L, H, d_h], as the forward calls it before its head transpose.
            query, key = rotary(query.transpose(1, 2), key.transpose(1, 2), position_embeddings)
            return query.transpose(1, 2), key.transpose(1, 2)
        cos, sin = position_embeddings
        if self.spec.attention.rotary_convention == "per_tensor":
            single = rotary

            # f(x, cos, sin) once per tensor; its default unsqueeze broadcasts over the head axis of
            # [B, H, L, d_h] exactly as unsqueeze_dim=2 does over [B, L, H, d_h] in the forward.
            def rotary(q: torch.Tensor, k: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> Any:
                return single(q, c, s), single(k, c, s)

        width = cos.shape[-1]
        if width >= query.shape[-1]:
            return rotary(query, key, cos, sin)
        query_rot, key_rot = rotary(query[..., :width], key[..., :width], cos, sin)
        return (
            torch.cat((query_rot, query[..., width:]), dim=-1),
            torch.cat((key_rot, key[..., width:]), dim=-1),
        )

    def _query_temperature(self, query: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        """``spec.attention.query_temperature``: q * (log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1).

        ``pos`` counts the query rows from 0, as the forward does without a cache (it reads no position ids).
        """
        positions = torch.arange(query.shape[2], device=query.device, dtype=torch.float32)
        scales = torch.log1p(torch.floor((positions + 1.0) / attn.floor_scale)) * attn.attn_scale + 1.0
        return (query * scales.view(1, 1, -1, 1)).to(query.dtype)

    def compute_attention_scores(
        self,
        hidden_states: torch.Tensor,
        layer: int,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Pre-softmax attention scores [B, H, L, L] of ``layer``, recomputed from its inputs.

        Args:
            hidden_states: [B, L, D], the attention module's input (after the input layernorm).
            layer: decoder layer index.
            attention_mask: accepted for signature compatibility; scores are pre-mask.
            position_embeddings: ``(cos, sin)`` each [B, L, d_h], as the decoder passes them. When
                omitted they are recomputed from the decoder's rotary module with positions 0..L-1,
                which is only right for text-only, unpadded inputs.

        RoPE is applied, key heads are repeated to the query heads (GQA) and the product is scaled.
        Runs under ``no_grad``: recomputation must never leak into a backward pass.
        """
        del attention_mask
        attn = self.module(ATTENTION, layer)
        if (absent := self.recompute_absence(layer)) is not None:
            raise ContractError(absent)
        recipe = self.spec.attention
        # Norms before RoPE go through the projection (at their own width); after it, per head here.
        early = not recipe.norms_after_rotary
        with torch.no_grad():
            # A role's part of its module's output: a gated query's query half, a fused projection's q / k.
            q_part, k_part = self.output_part(Q_PROJ), self.output_part(K_PROJ)
            query = self._project_heads(
                self.module(Q_PROJ, layer),
                attn,
                recipe.q_norm if early else None,
                hidden_states,
                q_part[0] if q_part else None,
            )
            key = self._project_heads(
                self.module(K_PROJ, layer),
                attn,
                recipe.k_norm if early else None,
                hidden_states,
                k_part[0] if k_part else None,
            )
            if self._rotary is not None and self.applies_rotary(layer):
                embeddings = position_embeddings
                if embeddings is None:
                    embeddings = self._default_position_embeddings(hidden_states, layer)
                query, key = self._apply_rotary(query, key, embeddings)
            if not early:
                q_norm, k_norm = (
                    self._qk_norm_module(attn, recipe.q_norm),
                    self._qk_norm_module(attn, recipe.k_norm),
                )
                query = query if q_norm is None else q_norm(query)
                key = key if k_norm is None else k_norm(key)
            if recipe.query_temperature is not None and self._attention_condition(
                layer, recipe.query_temperature
            ):
                query = self._query_temperature(query, attn)
            key = self._repeat_kv(key, query.shape[1] // key.shape[1])
            # In place on the fresh product: one [B, H, L, L] buffer, not two (bit-identical to `* s`).
            return torch.matmul(query, key.transpose(2, 3)).mul_(self._scaling(attn))

    def compute_attention_patterns(
        self,
        hidden_states: torch.Tensor,
        layer: int,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attention probabilities [B, H, L, L]: softmax(scores + mask), computed in fp32.

        ``attention_mask`` is the mask the decoder hands the layer (a sliding-window layer gets its
        own), in the form of the active implementation: ``None`` (causal), boolean (SDPA) or additive
        float (eager); see :func:`additive_mask`. Returned in the input's dtype, as eager attention
        returns its weights.
        """
        scores = self.compute_attention_scores(hidden_states, layer, None, position_embeddings)
        with torch.no_grad():
            scores = scores.float()
            mask = additive_mask(attention_mask, scores, self.sliding_window(layer))
            patterns = torch.softmax(scores.add_(mask), dim=-1)  # scores is ours: add in place
        return patterns.to(hidden_states.dtype)

    def applies_rotary(self, layer: int) -> bool:
        """Whether ``layer``'s attention applies RoPE (``spec.attention.rotary_condition``)."""
        condition = self.spec.attention.rotary_condition
        return True if condition is None else self._attention_condition(layer, condition)

    def _attention_condition(self, layer: int, condition: str) -> bool:
        """Whether ``condition`` (attention attributes joined by ``and``, each optionally ``not``) holds
        on ``layer``'s attention module; a missing attribute reads as falsy."""
        return _condition_holds(self.get_lm_attn(layer), condition)

    def sliding_window(self, layer: int) -> int | None:
        """The attention window of ``layer`` (``None`` for full attention).

        The attention module's own ``sliding_window`` where it has one; else the text config's, on the
        layers ``layer_types`` marks as sliding (or on every layer when the config has no layer types, as
        Mistral applies its window).
        """
        attn = self.get_lm_attn(layer)
        if hasattr(attn, "sliding_window"):
            return attn.sliding_window
        window = getattr(self.lm_config, "sliding_window", None)
        kinds = getattr(self.lm_config, "layer_types", None)
        if window is None or (isinstance(kinds, list | tuple) and kinds[layer] != "sliding_attention"):
            return None
        return int(window)

    def _rotary_module(self, layer: int) -> nn.Module | None:
        """The module computing ``(cos, sin)`` for ``layer``: the decoder's ``rotary_emb``, or the attention's
        own where it computes them itself from the ``position_ids`` it is passed (IDEFICS)."""
        rotary = getattr(self._language_model, "rotary_emb", None)
        if rotary is None and 0 <= layer < len(self.lm_layers) and self.absence(ATTENTION, layer) is None:
            rotary = getattr(self.module(ATTENTION, layer), "rotary_emb", None)
        return rotary

    def call_position_embeddings(
        self, layer: int, hidden_states: torch.Tensor, kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The ``(cos, sin)`` of layer ``layer``'s attention call with keyword arguments ``kwargs``.

        The decoder's ``position_embeddings`` where it passes them; else, for an attention that rotates with
        its own rotary module from the ``position_ids`` it is passed, that module's output for those
        positions (what the attention itself computes). None where neither applies (the recomputation then
        assumes positions 0..L-1).
        """
        given = kwargs.get("position_embeddings")
        if given is not None:
            return given
        positions = kwargs.get("position_ids")
        rotary = self._rotary_module(layer)
        if positions is None or rotary is None or self._rotary is None:
            return None
        with torch.no_grad():
            return rotary(hidden_states, positions.expand(hidden_states.shape[0], -1))

    def _default_position_embeddings(
        self, hidden_states: torch.Tensor, layer: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rotary = self._rotary_module(layer)
        if rotary is None:
            raise ContractError(
                f"{self.spec.name}: position_embeddings are required (neither the decoder nor its attention "
                "has a `rotary_emb`)"
            )
        batch, length, _ = hidden_states.shape
        positions = torch.arange(length, device=hidden_states.device)[None].expand(batch, length)
        return rotary(hidden_states, positions)

    def compute_per_head_contributions(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """Each head's write to the residual stream: z [B, L, H, d_h] -> [B, L, H, D].

        Summed over heads (plus the o_proj bias, if any) this equals the attention output.
        """
        weight = self.get_lm_o_proj(layer).weight  # [D, H * d_h]
        per_head = weight.view(weight.shape[0], self.lm_num_heads, self.lm_head_dim)  # [D, H, d_h]
        with torch.no_grad():
            return torch.einsum("blhd,ehd->blhe", z.to(per_head.dtype), per_head)

    # -------------------------------------------------------------- cache format
    def format_cache(self, cache: dict[str, Any]) -> dict[str, Any]:
        """``format_cache_item`` applied to every ``lm.blocks.{i}.<hook type>`` entry of ``cache``."""
        return {
            name: self.format_cache_item(name.split(".", 3)[-1] if name.count(".") >= 3 else name, value)
            for name, value in cache.items()
        }

    def format_cache_item(self, hook_type: str, item: Any) -> Any:
        """Normalise a captured activation: unwrap tuples, split heads for q/k/v/z.

        q -> [B, L, H, d_h]; k, v -> [B, L, H_kv, d_h]; z -> [B, L, H, d_h]; anything else unchanged.
        """
        if isinstance(item, tuple):
            item = item[0]
        hook = HOOK_TYPES.get(hook_type)
        heads = None if hook is None else hook.heads
        if heads is not None and isinstance(item, torch.Tensor) and item.dim() == 3:
            count = self.lm_num_heads if heads == "query" else self.lm_num_kv_heads
            batch, length, _ = item.shape
            return item.reshape(batch, length, count, self.lm_head_dim)
        return item
