"""vlmforge: get a vision-language model into an interpretability toolkit correctly, in minutes.

>>> from vlmforge import HookedVLM
>>> vlm = HookedVLM.from_pretrained("tiny/llava")          # or "llava-7b", a hub id, a local dir
>>> inputs = vlm.prepare_messages("What is shown?", image)
>>> with vlm.run_with_cache(["lm.blocks.*.hook_resid_post"]):
...     vlm.forward(inputs)
>>> vlm.cache["lm.blocks.0.hook_resid_post"].shape
"""

# Registers the offline tiny-model builder behind HookedVLM.from_pretrained("tiny/<family>").
from vlmforge import tiny as _tiny  # noqa: F401  (imported for its registration)
from vlmforge.core import (
    FamilySpec,
    HookedVLM,
    ModelAdapter,
    ModelRegistry,
    VLMProcessor,
)

__version__ = "0.1.0"
__all__ = ["FamilySpec", "HookedVLM", "ModelAdapter", "ModelRegistry", "VLMProcessor", "__version__"]
