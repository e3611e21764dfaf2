"""LLaVA-1.5: a CLIP vision tower projected into a Llama decoder; one contiguous run of image tokens."""

from vlmforge.core import (
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    ModelAdapter,
    ModelRegistry,
    PromptFormat,
)
from vlmforge.core.spec import LLAMA_ROTARY, AttentionRecipe

SPEC = FamilySpec(
    name="llava",
    checkpoints=("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf"),
    aliases={"llava-7b": "llava-hf/llava-1.5-7b-hf", "llava-13b": "llava-hf/llava-1.5-13b-hf"},
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    language_model="model.language_model",
    attention=AttentionRecipe(rotary_function=LLAMA_ROTARY, scaling="scaling"),
    image_token=ImageTokenSource(config_attribute="image_token_id", token="<image>"),
    prompt=PromptFormat(image_in_message=False, image_before_text=True, continue_final_message=True),
    capabilities=Capabilities(
        contiguous_image_tokens=True, supports_batching=True, strict_residual_stream=True
    ),
)


@ModelRegistry.register("llava")
class LlavaAdapter(ModelAdapter):
    spec = SPEC
