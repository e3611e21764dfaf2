"""The declarative description of a VLM family.

A family module declares *only* these plain-data facts; everything else (module access, dimension
lookup, attention recomputation, cache formatting, prompting) is implemented once in
:class:`vlmforge.core.adapter.ModelAdapter` and :class:`vlmforge.core.processing.VLMProcessor`.

The spec is deliberately plain data (strings, booleans, tuples): the scaffolder's copier template
fills it in from the automated research answers, and the conformance harness reads the declared
capabilities from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

LLAMA_ROTARY = "transformers.models.llama.modeling_llama.apply_rotary_pos_emb"

CAPABILITY_NAMES = ("contiguous_image_tokens", "supports_batching", "strict_residual_stream")


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

    contiguous_image_tokens: bool = True
    supports_batching: bool = True
    strict_residual_stream: bool = True

    def as_dict(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in CAPABILITY_NAMES}


@dataclass(frozen=True)
class ModulePaths:
    """Attribute names inside the language model (dotted paths are allowed everywhere)."""

    layers: str = "layers"
    final_norm: str = "norm"
    attention: str = "self_attn"
    mlp: str = "mlp"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    gate_proj: str | None = "gate_proj"
    up_proj: str | None = "up_proj"
    down_proj: str | None = "down_proj"


@dataclass(frozen=True)
class AttentionRecipe:
    """How the family's eager attention turns hidden states into pre-softmax scores.

    Attributes:
        rotary_function: dotted path of the ``apply_rotary_pos_emb`` the attention module calls, or
            ``None`` for a model without rotary embeddings.
        q_norm / k_norm: attribute names of per-head norms applied to q / k *before* RoPE
            (Qwen3-style), or ``None``.
        scaling: attribute of the attention module holding the softmax scale; when the attribute is
            missing the scale falls back to ``head_dim ** -0.5``.
    """

    rotary_function: str | None = LLAMA_ROTARY
    q_norm: str | None = None
    k_norm: str | None = None
    scaling: str = "scaling"


@dataclass(frozen=True)
class ImageTokenSource:
    """Where the image-placeholder token id comes from.

    ``config_attribute`` is looked up on the top-level model config first (``image_token_id`` also
    resolves ``image_token_index`` in transformers 5); ``token`` is the placeholder string, looked up
    in the tokenizer when the config has no such attribute.
    """

    config_attribute: str | None = "image_token_id"
    token: str | None = None


@dataclass(frozen=True)
class PromptFormat:
    """The chat-template conventions of the family's processor.

    Attributes:
        image_in_message: the image content item carries the image itself
            (``{"type": "image", "image": img}``) rather than a bare ``{"type": "image"}`` placeholder.
        image_before_text: the image item precedes the text item in the user turn.
        continue_final_message: the template supports assistant prefill through
            ``continue_final_message=True``; otherwise the prefill is appended to the rendered prompt.
    """

    image_in_message: bool = False
    image_before_text: bool = True
    continue_final_message: bool = True


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
        modules: attribute names inside the decoder.
        attention: the attention recipe used by ``compute_attention_scores``.
        image_token: where ``get_image_token_id`` reads the image token.
        prompt: chat-template conventions used by the family's processor.
        capabilities: declared capability flags (the harness measures them).
        tiny_reference: checkpoint whose stored config is shrunk into the family's tiny model.
        notes: free text shown in listings (why a flag is False, quirks).
    """

    name: str
    checkpoints: tuple[str, ...]
    model_types: tuple[str, ...]
    model_class: str
    language_model: str
    aliases: Any = field(default_factory=dict)
    lm_head: str = "lm_head"
    modules: ModulePaths = ModulePaths()
    attention: AttentionRecipe = AttentionRecipe()
    image_token: ImageTokenSource = ImageTokenSource()
    prompt: PromptFormat = PromptFormat()
    capabilities: Capabilities = Capabilities()
    tiny_reference: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
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
        return FamilySpec(**values)
