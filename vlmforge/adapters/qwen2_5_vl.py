"""Qwen2.5-VL: dynamic-resolution ViT with window attention, a Qwen2 decoder with M-RoPE and GQA.

M-RoPE is mixed inside the rotary-embedding module (transformers >= 5.18), so the attention applies
the plain rotate-half ``apply_rotary_pos_emb`` to the (cos, sin) the decoder hands each layer.
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
    name="qwen2_5_vl",
    checkpoints=(
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "Qwen/Qwen2.5-VL-32B-Instruct",
        "Qwen/Qwen2.5-VL-72B-Instruct",
        "ByteDance-Seed/UI-TARS-1.5-7B",
    ),
    model_types=("qwen2_5_vl",),
    model_class="Qwen2_5_VLForConditionalGeneration",
    language_model="model.language_model",
    aliases={
        "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2.5-vl-32b": "Qwen/Qwen2.5-VL-32B-Instruct",
        "qwen2.5-vl-72b": "Qwen/Qwen2.5-VL-72B-Instruct",
        "ui-tars-1.5-7b": "ByteDance-Seed/UI-TARS-1.5-7B",
    },
    attention=AttentionRecipe(
        rotary_function="transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.apply_rotary_pos_emb"
    ),
    image_token=ImageTokenSource(token="<|image_pad|>"),
    prompt=PromptFormat(image_in_message=False, continue_final_message=True),
    capabilities=Capabilities(
        contiguous_image_tokens=True, supports_batching=True, strict_residual_stream=True
    ),
)


@ModelRegistry.register("qwen2_5_vl")
class Qwen2_5_VLAdapter(ModelAdapter):
    spec = SPEC
