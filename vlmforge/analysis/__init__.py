"""Analysis and visualisation on top of the hooked runtime, derived from each family's adapter and processor.

* :mod:`~vlmforge.analysis.geometry`: :func:`image_info` -- the patch grid of an image as the model sees
  it (original / processed size, crop box, patch and merge size), for every single-grid family.
* :mod:`~vlmforge.analysis.patch_overview`: the grid drawn over the processed image.
* :mod:`~vlmforge.analysis.logit_lens`: per-layer top-k predictions through the final norm and unembedding.
* :mod:`~vlmforge.analysis.html`: a self-contained HTML logit-lens report.
* :mod:`~vlmforge.analysis.metadata`: token labels and image-token positions of a prepared input.
* :mod:`~vlmforge.analysis.vision`: Qwen-VL-style ``smart_resize`` and image extraction from messages.

This layer imports only :mod:`vlmforge.core`.
"""

from vlmforge.analysis.geometry import (
    CorrectedBbox,
    CorrectedSeg,
    ImageInfo,
    PatchOverlap,
    UnsupportedGeometryError,
    image_info,
    patch_and_merge,
)
from vlmforge.analysis.html import create_logit_lens, logit_lens_report, render_logit_lens_html
from vlmforge.analysis.logit_lens import compute_logit_lens, logit_lens, logit_lens_probabilities
from vlmforge.analysis.metadata import VLMMetadataExtractor, extract_metadata, token_labels
from vlmforge.analysis.patch_overview import draw_patch_overview, generate_patch_overview
from vlmforge.analysis.vision import process_vision_info, resolve_patch_params, smart_resize

__all__ = [
    "CorrectedBbox",
    "CorrectedSeg",
    "ImageInfo",
    "PatchOverlap",
    "UnsupportedGeometryError",
    "VLMMetadataExtractor",
    "compute_logit_lens",
    "create_logit_lens",
    "draw_patch_overview",
    "extract_metadata",
    "generate_patch_overview",
    "image_info",
    "logit_lens",
    "logit_lens_probabilities",
    "logit_lens_report",
    "patch_and_merge",
    "process_vision_info",
    "render_logit_lens_html",
    "resolve_patch_params",
    "smart_resize",
    "token_labels",
]
