"""SmolVLM (Idefics3 architecture): a SigLIP tower, pixel-shuffle connector and a Llama decoder.

Images are split into tiles plus a global view; each tile's image tokens are wrapped in
``<fake_token_around_image><row_i_col_j>`` markers, so image tokens are *not* contiguous.
"""

from vlmforge.core import (
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    ModelAdapter,
    ModelRegistry,
    PromptFormat,
)

SPEC = FamilySpec(
    name="smolvlm",
    checkpoints=(
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        "HuggingFaceTB/SmolVLM-Instruct",
    ),
    model_types=("idefics3",),
    model_class="Idefics3ForConditionalGeneration",
    language_model="model.text_model",
    aliases={
        "smolvlm-256m": "HuggingFaceTB/SmolVLM-256M-Instruct",
        "smolvlm-500m": "HuggingFaceTB/SmolVLM-500M-Instruct",
        "smolvlm-2b": "HuggingFaceTB/SmolVLM-Instruct",
    },
    image_token=ImageTokenSource(token="<image>"),
    prompt=PromptFormat(image_in_message=False, continue_final_message=True),
    capabilities=Capabilities(
        contiguous_image_tokens=False, supports_batching=True, strict_residual_stream=True
    ),
)


@ModelRegistry.register("smolvlm")
class SmolVLMAdapter(ModelAdapter):
    spec = SPEC
