"""Qwen3-VL: a Qwen3 decoder (per-head q/k RMSNorm before RoPE, explicit head_dim, GQA, M-RoPE).

Deepstack adds visual features from early vision layers into the residual stream *after* the first
decoder layers, so ``hook_resid_post[i]`` differs from ``hook_resid_pre[i + 1]`` there.
"""

from vlmforge.core import (
    AttentionRecipe,
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    ModelAdapter,
    ModelRegistry,
    PromptFormat,
)

SPEC = FamilySpec(
    name="qwen3_vl",
    checkpoints=("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"),
    model_types=("qwen3_vl",),
    model_class="Qwen3VLForConditionalGeneration",
    language_model="model.language_model",
    aliases={
        "qwen3-vl-2b": "Qwen/Qwen3-VL-2B-Instruct",
        "qwen3-vl-4b": "Qwen/Qwen3-VL-4B-Instruct",
        "qwen3-vl-8b": "Qwen/Qwen3-VL-8B-Instruct",
    },
    attention=AttentionRecipe(
        rotary_function="transformers.models.qwen3_vl.modeling_qwen3_vl.apply_rotary_pos_emb",
        q_norm="q_norm",
        k_norm="k_norm",
    ),
    image_token=ImageTokenSource(token="<|image_pad|>"),
    prompt=PromptFormat(image_in_message=False, continue_final_message=True),
    capabilities=Capabilities(
        contiguous_image_tokens=True, supports_batching=True, strict_residual_stream=False
    ),
    notes="deepstack injects visual features after the first decoder layers",
)


@ModelRegistry.register("qwen3_vl")
class Qwen3VLAdapter(ModelAdapter):
    spec = SPEC
