"""The declarative description of a VLM family.

A family module declares *only* these plain-data facts; everything else (module access, dimension
lookup, attention recomputation, cache formatting, prompting) is implemented once in
:class:`vlmforge.core.adapter.ModelAdapter` and :class:`vlmforge.core.processing.VLMProcessor`.

The spec is deliberately plain data (strings, booleans, tuples): the scaffolder's copier template
fills it in from the automated research answers, and the conformance harness reads the declared
capabilities from it. Each field is declared with :func:`spec_field`, which documents it for the
scaffolder (help text, kind, answer key): the questions, answers and rendering are derived from that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import Any, Literal

LLAMA_ROTARY = "transformers.models.llama.modeling_llama.apply_rotary_pos_emb"

#: The layouts of a fused q/k/v projection's output (see ``AttentionRecipe.qkv_layout``).
QKV_LAYOUTS = ("blocks", "per_head")

#: How the rotary function is called (see ``AttentionRecipe.rotary_convention``).
ROTARY_CONVENTIONS = ("cos_sin", "freqs_tokens_first", "per_tensor")

CAPABILITY_NAMES = ("contiguous_image_tokens", "supports_batching", "strict_residual_stream")

# ------------------------------------------------------------------------------------------ field schema
# Every spec field carries its own documentation (help, kind, answer key): the scaffolder derives the
# copier questions, the research -> spec mapping and the rendering of generated modules from it
# (vlmforge.scaffold.schema), so adding a field to a recipe is this one edit plus the research answering it.

FieldKind = Literal[
    "family_name",  # a lowercase Python identifier (the registry id)
    "class_name",  # a Python class name
    "attribute_path",  # an attribute name or dotted path (a.b.c)
    "import_path",  # an importable dotted path (package.module.function)
    "text",  # any string
    "bool",
    "optional_bool",  # True / False, or None: measured at load time (see the field's help)
    "count",  # a whole number >= 1
    "str_list",  # a non-empty list of strings
    "hub_ids",  # a list of "org/name" Hugging Face ids
    "alias_map",  # alias -> one of the checkpoints
]
_METADATA_KEY = "vlmforge"


@dataclass(frozen=True)
class FieldInfo:
    """What the scaffolder needs to know about one spec field (stored in the field's metadata).

    Attributes:
        help: one line for the questionnaire (the copier question's help).
        kind: how a leaf value is asked and validated; ``None`` for a nested group (its default is a
            spec dataclass instance, whose own fields are the leaves).
        key: the research answer / copier question of a leaf; defaults to the field name. Keys are
            unique across the whole spec.
        slot: the TODO slot of a nested group (a TODO there is rendered above the whole group); a
            leaf's slot is its key.
        always_render: render the field in generated modules even when it equals its default.
        identity: identifies the family (name, checkpoints...) rather than describing its architecture:
            the caller supplies it, and :meth:`ResearchReport.spec_kwargs` leaves it out.
        required_unless: the key of another leaf (or several): this one may only be empty when one of
            them is given.
        measured: research measures the value on a tiny random model (not read from code or config
            alone), so a research run without a tiny model cannot hold it; the conformance harness
            measures it again on every run.
    """

    help: str
    kind: FieldKind | None = None
    key: str | None = None
    slot: str | None = None
    always_render: bool = False
    identity: bool = False
    required_unless: str | tuple[str, ...] | None = None
    measured: bool = False


def spec_field(
    default: Any = MISSING,
    *,
    help: str,
    kind: FieldKind | None = None,
    key: str | None = None,
    slot: str | None = None,
    always_render: bool = False,
    identity: bool = False,
    required_unless: str | tuple[str, ...] | None = None,
    measured: bool = False,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field of a spec, documented for the scaffolder (see :class:`FieldInfo`)."""
    info = FieldInfo(help, kind, key, slot, always_render, identity, required_unless, measured)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_METADATA_KEY: info})


@dataclass(frozen=True)
class SpecNode:
    """One field of a spec class as the scaffolder sees it: a leaf value or a nested group.

    Attributes:
        path: attribute names from the spec class down to the field (``("attention", "q_norm")``).
        info: the field's :class:`FieldInfo`.
        default: the field's default (``dataclasses.MISSING`` for a required field).
        nullable: the annotation admits ``None`` (an empty answer then means ``None``).
        group: the dataclass of a nested group, ``None`` for a leaf.
        children: the group's fields.
    """

    path: tuple[str, ...]
    info: FieldInfo
    default: Any
    nullable: bool
    group: type | None = None
    children: tuple[SpecNode, ...] = ()

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def key(self) -> str:
        """The answer key of a leaf (the field name unless the field declares another)."""
        return self.info.key or self.name

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def leaves(self) -> Iterator[SpecNode]:
        """This node if it is a leaf, else the leaves below it, in declaration order."""
        if self.group is None:
            yield self
        for child in self.children:
            yield from child.leaves()


def _admits_none(annotation: Any) -> bool:
    # Annotations are strings here (``from __future__ import annotations``); specs write ``X | None``.
    if isinstance(annotation, str):
        return any(part.strip() == "None" for part in annotation.split("|"))
    return type(None) in getattr(annotation, "__args__", ())


def spec_nodes(spec_class: type, path: tuple[str, ...] = ()) -> tuple[SpecNode, ...]:
    """The fields of a spec dataclass, nested groups expanded (the schema the scaffolder works from).

    Raises:
        TypeError: a field was declared without :func:`spec_field`, or a leaf without a ``kind``.
    """
    nodes = []
    for f in fields(spec_class):
        info = f.metadata.get(_METADATA_KEY)
        if not isinstance(info, FieldInfo):
            raise TypeError(f"{spec_class.__name__}.{f.name} is not declared with spec_field(...)")
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        group = type(default) if dataclasses.is_dataclass(default) else None
        if group is None and info.kind is None:
            raise TypeError(f"{spec_class.__name__}.{f.name} is a leaf and needs a kind")
        children = spec_nodes(group, (*path, f.name)) if group is not None else ()
        nodes.append(SpecNode((*path, f.name), info, default, _admits_none(f.type), group, children))
    return tuple(nodes)


def spec_leaves(spec_class: type) -> Iterator[SpecNode]:
    """Every leaf field of a spec class, nested groups flattened, in declaration order."""
    for node in spec_nodes(spec_class):
        yield from node.leaves()


def named_constants() -> dict[str, str]:
    """``{value: name}`` of this module's string constants: generated modules spell those by name."""
    return {
        value: name
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


@dataclass(frozen=True)
class Capabilities:
    """What the family does, declared by its module and *measured* by the conformance harness.

    Attributes:
        contiguous_image_tokens: all image tokens of one image form one unbroken run in ``input_ids``
            (False for Idefics3/SmolVLM, which interleaves row/column markers between tiles).
        supports_batching: each item of a left-padded batch gives the same result as run alone.
        strict_residual_stream: ``hook_resid_post[i]`` is exactly ``hook_resid_pre[i + 1]`` (False
            when something writes into the residual stream between decoder layers, e.g. Qwen3-VL's
            deepstack visual injection).
    """

    contiguous_image_tokens: bool = spec_field(
        True,
        kind="bool",
        measured=True,
        help="One image's tokens form one unbroken run (measured on a tiny model)",
    )
    supports_batching: bool = spec_field(
        True,
        kind="bool",
        measured=True,
        help="Left-padded batches give the same results as single inputs (measured)",
    )
    strict_residual_stream: bool = spec_field(
        True,
        kind="bool",
        measured=True,
        help="hook_resid_post[i] equals hook_resid_pre[i+1] exactly (measured)",
    )

    def as_dict(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in CAPABILITY_NAMES}


@dataclass(frozen=True)
class ModulePaths:
    """Attribute names inside the language model (dotted paths are allowed everywhere).

    ``qkv_proj`` declares a fused query/key/value projection (Persimmon's ``query_key_value``): the q / k / v
    roles are then parts of its output, laid out as ``AttentionRecipe.qkv_layout`` says, and their hooks read
    and patch those parts.

    ``cross_attention`` declares how images reach a cross-attention decoder (Llama 3.2 Vision): the
    layers that have that module attend to the image features *instead of* to the tokens, so they have
    no ``attention`` module, no attention hooks and no self-attention pattern, and the image tokens in
    ``input_ids`` carry no image features (the checks that look for them there are not applicable).
    Which layers is structural, so it holds at any depth (the tiny model keeps fewer layers).

    ``cross_attention_blocks`` declares the other arrangement (Flamingo, IDEFICS): the cross-attention
    blocks live in a decoder-level list of their own, which the decoder's loop applies before some of its
    self-attention layers. Every layer keeps its self-attention and its hooks (``resid_pre`` of layer ``i``
    is the input of layer ``i``'s self-attention, after any cross-attention block before it), the blocks
    write into the residual stream between layers, and the image tokens in ``input_ids`` carry no image
    features either.

    ``gate_transform`` names an MLP method the forward applies to the gate projection's output before the
    activation, on the layers where ``gate_transform_condition`` (MLP attributes, as in
    ``AttentionRecipe.rotary_condition``) holds: Gemma3n's first layers sparsify the gate
    (``_gaussian_topk``, keeping the values above mean + std * icdf(sparsity)). ``mlp.hook_pre`` stays the
    gate projection's output; ``mlp.hook_post`` is ``act(transform(hook_pre)) * hook_pre_linear``, which is
    what the MLP decomposition check recomputes through the module's own method.
    """

    layers: str = spec_field(
        "layers", kind="attribute_path", help="Decoder attribute holding the ModuleList of layers"
    )
    final_norm: str = spec_field("norm", kind="attribute_path", help="Decoder attribute of the final norm")
    attention: str = spec_field(
        "self_attn", kind="attribute_path", help="Layer attribute of the attention module"
    )
    mlp: str = spec_field("mlp", kind="attribute_path", help="Layer attribute of the MLP module")
    input_norm: str | None = spec_field(
        "input_layernorm",
        kind="attribute_path",
        help="Layer attribute of the norm whose output is the attention's input (empty if none)",
    )
    mlp_norm: str | None = spec_field(
        "post_attention_layernorm",
        kind="attribute_path",
        help="Layer attribute of the norm whose output is the MLP's input (empty if none)",
    )
    q_proj: str | None = spec_field(
        "q_proj",
        kind="attribute_path",
        help="Attention attribute of the query projection (empty when qkv_proj computes it)",
    )
    k_proj: str | None = spec_field(
        "k_proj",
        kind="attribute_path",
        help="Attention attribute of the key projection (empty when qkv_proj computes it)",
    )
    v_proj: str | None = spec_field(
        "v_proj",
        kind="attribute_path",
        help="Attention attribute of the value projection (empty when qkv_proj computes it)",
    )
    o_proj: str = spec_field(
        "o_proj", kind="attribute_path", help="Attention attribute of the output projection"
    )
    qkv_proj: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute of a fused query/key/value projection (q_proj / k_proj / v_proj then "
        "empty: the hooks split it as attention.qkv_layout says); empty if not fused",
    )
    gate_proj: str | None = spec_field(
        "gate_proj",
        kind="attribute_path",
        help="MLP attribute of the gate projection (empty if the MLP is not gated)",
    )
    up_proj: str | None = spec_field(
        "up_proj", kind="attribute_path", help="MLP attribute of the up projection (empty if none)"
    )
    down_proj: str | None = spec_field(
        "down_proj", kind="attribute_path", help="MLP attribute of the down projection (empty if none)"
    )
    gate_up_proj: str | None = spec_field(
        None,
        kind="attribute_path",
        help="MLP attribute of a fused [gate; up] projection, gate half first (gate_proj / up_proj then "
        "empty: the hooks split it); empty if not fused",
    )
    gate_transform: str | None = spec_field(
        None,
        kind="attribute_path",
        help="MLP method the forward applies to the gate projection's output before the activation (e.g. "
        "a top-k sparsification; mlp.hook_pre is the gate before it); empty if none",
    )
    gate_transform_condition: str | None = spec_field(
        None,
        kind="text",
        help="MLP attributes ('a and not b') true exactly on the layers applying gate_transform; empty: "
        "every layer",
    )
    cross_attention: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Layer attribute of a cross-attention module whose keys and values are the image features "
        "(the image reaches the decoder through the layers that have it, not through the input "
        "embeddings; those layers have no self-attention hooks); empty if none",
    )
    cross_attention_blocks: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Decoder attribute of a list of cross-attention blocks (keys and values: the image features) "
        "that the decoder applies between its layers, apart from them (the image reaches the decoder "
        "through them, not through the input embeddings); empty if none",
    )


@dataclass(frozen=True)
class MixtureOfExperts:
    """The mixture-of-experts MLPs of a decoder, if any.

    Which layers are MoE layers is structural, so it holds for every depth (a tiny model has fewer
    layers than the checkpoint): a layer is a MoE layer when its MLP has the ``experts`` attribute.
    Dense layers use :class:`ModulePaths`' gate / up / down projections; on MoE layers those hooks are
    not applicable and ``mlp.hook_router_logits`` / ``mlp.hook_experts_out`` are.

    Attributes:
        experts: MLP attribute of the routed experts, whose output is the routing-weighted sum over the
            selected experts (``None``: the family has no MoE layers).
        router: MLP attribute of the linear router (a ``weight`` of shape [n_experts, D]) whose logits
            select the experts.
        shared_experts: MLP attribute of the always-active shared expert(s), if any.
        experts_slot_rows: the experts return one ``[D]`` row per (expert slot, token), slot-major
            (``[slots * tokens, D]``), and the MLP sums them over the slots (Llama4 scales each slot's *input*
            by its routing weight, so that sum is the routing-weighted sum): ``mlp.hook_experts_out`` shows
            the sum as [B, L, D]; a replacement is written into the first slot with the others zeroed, so
            the MLP's own sum yields it.
    """

    experts: str | None = spec_field(
        None,
        kind="attribute_path",
        key="moe_experts",
        help="MLP attribute of the routed experts; layers whose MLP has it are MoE layers (empty: no MoE)",
    )
    router: str | None = spec_field(
        None,
        kind="attribute_path",
        key="moe_router",
        help="MLP attribute of the linear router of MoE layers (empty: no MoE)",
    )
    shared_experts: str | None = spec_field(
        None,
        kind="attribute_path",
        key="moe_shared_experts",
        help="MLP attribute of the shared expert(s) of MoE layers (empty if none)",
    )
    experts_slot_rows: bool = spec_field(
        False,
        kind="bool",
        key="moe_experts_slot_rows",
        help="The experts return one row per (expert slot, token), slot-major, summed over slots by the MLP",
    )


@dataclass(frozen=True)
class AttentionRecipe:
    """How the family's eager attention turns hidden states into pre-softmax scores.

    Attributes:
        rotary_function: dotted path of the ``apply_rotary_pos_emb`` the attention module calls, or
            ``None`` for a model without rotary embeddings.
        q_norm / k_norm: attribute names of per-head norms applied to q / k *before* RoPE
            (Qwen3-style; after it with ``norms_after_rotary``), or ``None``.
        scaling: attribute of the attention module holding the softmax scale; when the attribute is
            missing the scale falls back to ``head_dim ** -0.5``.
        rotary_condition: RoPE is applied only on the layers whose attention module has this attribute
            truthy (``"not x"``: falsy), e.g. ``"sliding_window"`` where full-attention layers use none;
            ``None``: on every layer.
        hybrid: the decoder interleaves softmax-attention layers with other token mixers (linear
            attention, short convolutions); a layer without the ``modules.attention`` module has no
            attention hooks (which layers is structural, so it holds at any depth; the config's
            ``layer_types`` names them in messages).
        qkv_layout: how a fused ``modules.qkv_proj`` output ``[..., (H + 2 H_kv) d_h]`` splits into q, k, v:
            ``"blocks"`` = ``[Q; K; V]`` concatenated (Phi-3 style), ``"per_head"`` = per key/value head its
            query heads, its key and its value (``[..., H_kv, H / H_kv + 2, d_h]``; GPT-NeoX / Persimmon
            interleave ``[q; k; v]`` per head). Measured: research keeps the layout whose recomputed
            attention matches the model's eager attention. Unused without a fused projection.
        query_gate: ``q_proj`` returns ``[query; gate]`` per head (``[B, L, H, 2 * d_h]``, query first),
            the gate multiplying the attention output by ``sigmoid(gate)`` before ``o_proj``: ``attn.hook_q``
            and the recomputed scores use the query half.
        rotary_convention: how ``rotary_function`` is called. ``"cos_sin"``: ``f(q, k, cos, sin)`` on
            ``[B, H, L, d_h]`` with ``position_embeddings = (cos, sin)``; ``"freqs_tokens_first"``:
            ``f(q, k, freqs)`` on ``[B, L, H, d_h]`` (before the head transpose) with ``position_embeddings``
            one tensor (Llama4's complex ``freqs_cis``); ``"per_tensor"``: ``f(x, cos, sin)`` called once for
            q and once for k (Gemma3n's ``apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim=2)``; the adapter
            calls it on ``[B, H, L, d_h]`` with the function's default ``unsqueeze_dim``, which broadcasts the
            same way).
        norms_after_rotary: ``q_norm`` / ``k_norm`` run after RoPE instead of before (Llama4's L2 norm).
        norms_where_present: the forward applies the q/k norms under ``hasattr(self, <norm>)``: layers
            whose attention has no such attribute apply none (Llama4 builds its norm on RoPE layers only).
        query_temperature: condition (attention attributes joined by ``and``, each optionally ``not``) of
            the layers that multiply the query (after RoPE and norms) by the position-dependent temperature
            ``log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1`` (temperature tuning, arXiv
            2501.19399), reading the module's own ``floor_scale`` and ``attn_scale``; ``pos`` counts the
            query rows from 0 (the forward uses its cache length, not ``position_ids``). ``None``: no layer.
        v_norm: attribute of a per-head norm the forward applies to the values (``v_proj``'s output split into
            heads) before attending (Gemma3n's scale-free ``v_norm``): ``attn.hook_v`` is ``v_proj``'s output,
            and ``attn.hook_z`` is the pattern applied to the *normed* values.
        kv_shared: condition (attention attributes, as ``query_temperature``) of the layers that attend with
            the keys and values another layer computed (Gemma3n's last ``num_kv_shared_layers`` layers take
            them from a shared store under ``is_kv_shared_layer``): they have no ``k_proj`` / ``v_proj``,
            so no ``attn.hook_k`` / ``attn.hook_v``, and their scores and patterns cannot be recomputed from
            the layer's own input, so ``attn.hook_scores`` / ``attn.hook_pattern`` do not exist there and
            the attention checks report those layers not applicable. Which layers is structural.
        output_norm: attribute of a norm the attention applies to the concatenated head outputs before
            ``o_proj`` (Kosmos-2's ``inner_attn_ln``, a Magneto-style sub-LayerNorm): ``attn.hook_z`` is
            ``o_proj``'s input, so it holds the *normed* head values, ``norm(pattern @ v)``; the per-head
            decomposition through ``o_proj`` stays exact, but z of one head depends on all heads.
    """

    rotary_function: str | None = spec_field(
        LLAMA_ROTARY,
        kind="import_path",
        help="Dotted path of the apply_rotary_pos_emb the attention calls (empty for no RoPE)",
    )
    q_norm: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute of a per-head query norm applied before RoPE (empty if none)",
    )
    k_norm: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute of a per-head key norm applied before RoPE (empty if none)",
    )
    scaling: str = spec_field(
        "scaling", kind="attribute_path", help="Attention attribute holding the softmax scale"
    )
    rotary_condition: str | None = spec_field(
        None,
        kind="text",
        help="Attention attribute that is truthy exactly on the layers applying RoPE ('not x': falsy); "
        "empty: RoPE on every layer",
    )
    hybrid: bool = spec_field(
        False,
        kind="bool",
        help="Some decoder layers mix tokens without softmax attention (linear attention, convolution): "
        "attention hooks exist on the layers that have the attention module only",
    )
    qkv_layout: str = spec_field(
        "blocks",
        kind="text",
        measured=True,
        help="How the fused qkv_proj output splits: 'blocks' ([Q; K; V]) or 'per_head' (per kv head its "
        "queries, key, value); measured against eager attention, unused without qkv_proj",
    )
    query_gate: bool = spec_field(
        False,
        kind="bool",
        help="q_proj also computes a per-head output gate ([query; gate] per head): hooks and scores use "
        "the query half",
    )
    rotary_convention: str = spec_field(
        "cos_sin",
        kind="text",
        help="How the rotary function is called: 'cos_sin' (q, k, cos, sin on [B, H, L, d_h]), "
        "'freqs_tokens_first' (q, k, one position tensor, on [B, L, H, d_h] before the head transpose) or "
        "'per_tensor' (x, cos, sin: once for q, once for k); measured against eager attention where the "
        "source leaves it open",
    )
    norms_after_rotary: bool = spec_field(
        False, kind="bool", help="The q/k norms are applied after RoPE (not before)"
    )
    norms_where_present: bool = spec_field(
        False,
        kind="bool",
        help="The forward applies the q/k norms only where the attention has the norm attribute (hasattr)",
    )
    query_temperature: str | None = spec_field(
        None,
        kind="text",
        help="Attention attributes ('a and not b') true on the layers scaling the query by "
        "log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1 (empty: none)",
    )
    output_norm: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute of a norm over the concatenated head outputs before o_proj (attn.hook_z "
        "then holds norm(pattern @ v)); empty if none",
    )
    v_norm: str | None = spec_field(
        None,
        kind="attribute_path",
        help="Attention attribute of a per-head value norm the forward applies to v_proj's output before "
        "attending (attn.hook_v is before it); empty if none",
    )
    kv_shared: str | None = spec_field(
        None,
        kind="text",
        help="Attention attributes ('a and not b') true exactly on the layers that attend with another "
        "layer's keys and values (no k/v projections of their own; their scores/patterns are not "
        "recomputed); empty: none",
    )


@dataclass(frozen=True)
class ImageTokenSource:
    """Where the image-placeholder token id comes from.

    ``config_attribute`` is looked up on the top-level model config first (``image_token_id`` also
    resolves ``image_token_index`` in transformers 5); ``token`` is the placeholder string, looked up
    in the tokenizer when the config has no such attribute.

    ``marker_ids_attribute`` names the config attribute (a dotted path from the top-level config) that
    lists the *marker* tokens whose input embeddings the model also takes from the vision side: image-
    independent structure markers such as Ovis2's ``visual_indicator_token_ids`` (``<IMG_START>``,
    ``<IMG_GRID>``, ``<IMG_END>``...), embedded from rows of a visual embedding table rather than the text
    embedding. They are not image features: image-token positions stay exactly the positions of the
    image token; the markers only widen what the vision side may write into ``inputs_embeds``.

    ``position_mask`` names a processor output, a ``[B, L]`` 0/1 tensor the model's forward takes, that
    marks the image-feature positions where no single token id does: Kosmos-2's processor writes one
    *distinct* ordinary vocabulary id per image position (``unk_token_id + 1 ...``) and returns
    ``image_embeds_position_mask``, by which the model places the features. Image positions are then that
    mask (:meth:`ModelAdapter.image_token_mask`), and the family has no image token id.
    """

    # The historic answer keys (image_token_attribute / image_token) are what research answers.
    config_attribute: str | None = spec_field(
        "image_token_id",
        kind="attribute_path",
        key="image_token_attribute",
        help="Config attribute holding the image token id (empty if the id is looked up by token string)",
    )
    token: str | None = spec_field(
        None,
        kind="text",
        key="image_token",
        required_unless=("image_token_attribute", "image_position_mask"),
        help="Image placeholder token string (e.g. <image>)",
    )
    position_mask: str | None = spec_field(
        None,
        kind="attribute_path",
        key="image_position_mask",
        measured=True,
        help="Processor output key of a [B, L] 0/1 mask of the image-feature positions, for a family whose "
        "image positions are no single token id (measured on a tiny model; empty: the image token's)",
    )
    marker_ids_attribute: str | None = spec_field(
        None,
        kind="attribute_path",
        key="image_marker_ids_attribute",
        measured=True,
        help="Config attribute (dotted path) listing the marker token ids whose input embeddings the "
        "vision side writes besides the image tokens (measured on a tiny model; empty: none)",
    )


@dataclass(frozen=True)
class PromptFormat:
    """The chat-template conventions of the family's processor.

    ``image_in_message`` and ``continue_final_message`` are properties of the chat template a checkpoint
    ships: ``None`` means "measure them on the loaded processor's template"
    (:mod:`vlmforge.core.chat_template`), which is what the scaffolder writes when it has no real template
    to measure offline.

    Attributes:
        image_in_message: the image content item carries the image itself
            (``{"type": "image", "image": img}``) rather than a bare ``{"type": "image"}`` placeholder.
        image_before_text: the image item precedes the text item in the user turn.
        continue_final_message: the template supports assistant prefill through
            ``continue_final_message=True``; otherwise the prefill is appended to the rendered prompt.
    """

    image_in_message: bool | None = spec_field(
        None,
        kind="optional_bool",
        help='The chat template needs the image inside the message item ({"type":"image","image":img}); '
        "null: measured on the loaded processor's chat template",
    )
    image_before_text: bool = spec_field(
        True, kind="bool", help="The image item precedes the text in the user turn"
    )
    continue_final_message: bool | None = spec_field(
        None,
        kind="optional_bool",
        help="The chat template renders an assistant prefill with continue_final_message=True; null: "
        "measured on the loaded processor's chat template",
    )


@dataclass(frozen=True)
class FamilySpec:
    """Everything vlmforge knows about one VLM family, in one place.

    Attributes:
        name: registry id (``"llava"``); also the tiny model name ``tiny/<name>``.
        checkpoints: Hugging Face ids of the supported checkpoints.
        aliases: short names a user can type, mapped to a checkpoint id.
        model_types: ``config.model_type`` values of this family (local dirs and fine-tunes resolve
            through them).
        model_class: the transformers class name (``"LlavaForConditionalGeneration"``).
        language_model: dotted path from the top model to the decoder that owns ``layers``.
        lm_head: dotted path from the top model to the unembedding.
        logit_mask: dotted path from the top model to the token ids (a sequence or tensor of ints) whose
            logits the model's own forward sets to the dtype minimum after the unembedding (Chameleon
            never predicts its image-code tokens); the logit lens applies the same mask and the harness
            compares logits on the other columns. ``None``: the logits are ``lm_head``'s output.
        modules: attribute names inside the decoder.
        moe: the mixture-of-experts MLPs, if any.
        attention: the attention recipe used by ``compute_attention_scores``.
        image_token: where ``get_image_token_id`` reads the image token (or the processor output marking
            the image positions).
        prompt: chat-template conventions used by the family's processor.
        capabilities: declared capability flags (the harness measures them).
        batches_mixed_image_sizes: the processor puts images of different sizes into one batch. False
            where its per-image tensors keep a size-dependent shape that does not stack (PerceptionLM
            cuts an image into a thumbnail plus an aspect-ratio-dependent number of tiles): batches
            then hold images of one size, and checks of mixed-size batches do not apply.
        min_image_tokens: the fewest image tokens one image may give: an image the processor turns into
            fewer makes the model itself fail (1: no such limit). Transformers' Mistral3 squeezes the
            token axis out of a lone merged image token (an image of at most one 28 px cell), so its
            image-feature split fails; the harness measures the value and generates only images that
            give at least this many tokens.
        generates_batches: greedy generation of a left-padded batch gives each item the logits of its
            single generation at every step. False where the model's own generation positions padded rows
            wrong once the prompt is cached (Kosmos-2's fairseq-style positions count the left padding
            after the first step, and its generation drops any ``position_ids``): the first step still
            matches, later ones do not, so batched generation is measured and not applicable there.
        requires_image: the model's forward refuses a prompt without an image (Kosmos-2: "You have to
            specify either pixel_values or image_embeds"); checks that need an image-free control use the
            same prompt with another image instead.
        active_stream: text-config attribute holding the index of the residual stream the residual hooks
            show where the decoder layers carry several parallel streams stacked on a leading axis
            (``[N, B, L, D]``: Gemma3n's AltUp, ``altup_active_idx``). ``hook_resid_pre`` /
            ``hook_resid_post`` then read and patch that stream ([B, L, D]); the others are not hooked. The
            attention then reads the norm of a *mix* of the streams (AltUp's prediction) and the logits
            unembed a combination of all of them, so ``attn.hook_in`` is not ``input_norm(hook_resid_pre)``
            and the last ``hook_resid_post`` is no logit lens of the model's logits: those checks are not
            applicable.
        tiny_reference: checkpoint whose stored config is shrunk into the family's tiny model.
        notes: free text shown in listings (why a flag is False, quirks).
    """

    name: str = spec_field(
        kind="family_name",
        identity=True,
        help="Family id (registry name, module file name, tiny/<name>); a lowercase Python identifier",
    )
    checkpoints: tuple[str, ...] = spec_field(
        kind="hub_ids", identity=True, help="Hugging Face ids of the supported checkpoints (YAML list)"
    )
    model_types: tuple[str, ...] = spec_field(
        kind="str_list", help="config.model_type values of this family (YAML list)"
    )
    model_class: str = spec_field(
        kind="class_name", help="transformers class name (e.g. LlavaForConditionalGeneration)"
    )
    language_model: str = spec_field(
        kind="attribute_path",
        help="Dotted path from the top model to the decoder that owns the layers (e.g. model.language_model)",
    )
    aliases: Any = spec_field(
        default_factory=dict,
        kind="alias_map",
        identity=True,
        help="Short names mapped to checkpoint ids (YAML mapping)",
    )
    lm_head: str = spec_field(
        "lm_head", kind="attribute_path", help="Dotted path from the top model to the unembedding"
    )
    logit_mask: str | None = spec_field(
        None,
        kind="attribute_path",
        measured=True,
        help="Dotted path from the top model to the token ids whose logits the model's forward pins to the "
        "dtype minimum (tokens it never predicts, e.g. image codes); empty: the logits are lm_head's output "
        "(measured)",
    )
    modules: ModulePaths = spec_field(ModulePaths(), help="Attribute names inside the decoder")
    moe: MixtureOfExperts = spec_field(
        MixtureOfExperts(), slot="moe", help="Mixture-of-experts MLPs (which layers, router, experts)"
    )
    attention: AttentionRecipe = spec_field(
        AttentionRecipe(), slot="attention_recipe", help="How the attention computes pre-softmax scores"
    )
    image_token: ImageTokenSource = spec_field(ImageTokenSource(), help="Where the image token id comes from")
    prompt: PromptFormat = spec_field(PromptFormat(), help="Chat-template conventions of the processor")
    # Declared capabilities are what the harness measures: a reader of the module must see all three.
    capabilities: Capabilities = spec_field(
        Capabilities(), always_render=True, help="Declared capability flags (the harness measures them)"
    )
    batches_mixed_image_sizes: bool = spec_field(
        True,
        kind="bool",
        measured=True,
        help="The processor batches images of different sizes (measured; False: their per-image tensors, "
        "e.g. tile counts, differ and do not stack)",
    )
    # A limit of the model itself, measured like the capabilities; images below it are not tested.
    min_image_tokens: int = spec_field(
        1,
        kind="count",
        measured=True,
        help="Fewest image tokens one image may give before the model itself fails (measured on a tiny "
        "model; 1: no limit)",
    )
    generates_batches: bool = spec_field(
        True,
        kind="bool",
        measured=True,
        help="Greedy generation of a left-padded batch matches generating each item alone at every step "
        "(measured; False: the model's generation mis-positions padded rows after the prompt)",
    )
    requires_image: bool = spec_field(
        False,
        kind="bool",
        measured=True,
        help="The model's forward refuses a prompt without an image (measured; image-free controls then use "
        "another image)",
    )
    active_stream: str | None = spec_field(
        None,
        kind="attribute_path",
        measured=True,
        help="Text-config attribute holding the index of the residual stream the residual hooks show, where "
        "the decoder layers pass several parallel streams stacked on a leading axis ([N, B, L, D], AltUp); "
        "empty: one [B, L, D] stream (measured on a tiny model)",
    )
    tiny_reference: str | None = spec_field(
        None,
        kind="text",
        identity=True,
        required_unless="checkpoints",
        help="What build_tiny_model rebuilds the tiny model from (stored reference id, model_type or local "
        "dir); empty to use the first checkpoint",
    )
    notes: str = spec_field(
        "", kind="text", identity=True, help="Free text shown in listings (why a flag is False, quirks)"
    )

    def __post_init__(self) -> None:
        if self.attention.rotary_convention not in ROTARY_CONVENTIONS:
            raise ValueError(
                f"FamilySpec {self.name!r}: attention.rotary_convention must be one of {ROTARY_CONVENTIONS}, "
                f"got {self.attention.rotary_convention!r}"
            )
        if self.attention.qkv_layout not in QKV_LAYOUTS:
            raise ValueError(
                f"FamilySpec {self.name!r}: attention.qkv_layout must be one of {QKV_LAYOUTS}, "
                f"got {self.attention.qkv_layout!r}"
            )
        if not self.name.isidentifier():
            raise ValueError(f"FamilySpec.name must be a Python identifier, got {self.name!r}")
        if not self.checkpoints and not self.tiny_reference:
            raise ValueError(f"FamilySpec {self.name!r} declares neither checkpoints nor a tiny_reference")
        unknown = sorted(set(self.aliases.values()) - set(self.checkpoints))
        if unknown:
            raise ValueError(f"FamilySpec {self.name!r}: aliases point at undeclared checkpoints {unknown}")
        # Freeze the alias mapping so a spec cannot be mutated after registration.
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        object.__setattr__(self, "model_types", tuple(self.model_types))

    @property
    def reference_checkpoint(self) -> str | None:
        """The checkpoint the tiny model is shrunk from (defaults to the first checkpoint)."""
        return self.tiny_reference or (self.checkpoints[0] if self.checkpoints else None)

    def replace(self, **changes: Any) -> FamilySpec:
        """A copy with some fields changed (used by tests to build deliberately broken variants)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["aliases"] = dict(values["aliases"])
        values.update(changes)
        return type(self)(**values)
