"""LLaVA-1.5: a CLIP vision tower projected into a Llama decoder; one contiguous run of image tokens."""

from vlmforge.core import (
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    ModelAdapter,
    ModelRegistry,
    PromptFormat,
)

SPEC = FamilySpec(
    name="llava",
    checkpoints=("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf"),
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    language_model="model.language_model",
    aliases={"llava-7b": "llava-hf/llava-1.5-7b-hf", "llava-13b": "llava-hf/llava-1.5-13b-hf"},
    image_token=ImageTokenSource(token="<image>"),
    prompt=PromptFormat(image_in_message=False, continue_final_message=True),
    capabilities=Capabilities(
        contiguous_image_tokens=True, supports_batching=True, strict_residual_stream=True
    ),
)


@ModelRegistry.register("llava")
class LlavaAdapter(ModelAdapter):
    spec = SPEC
