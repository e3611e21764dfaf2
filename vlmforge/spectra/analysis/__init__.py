"""VLM Spectra's ``analysis`` module: the logit lens and input metadata (re-exported from vlmforge.analysis).

``VLMMetadataExtractor`` keeps VLM Spectra's ``extract_metadata_qwen`` / ``extract_metadata_llava`` and
adds ``extract_metadata(vlm, inputs, image)``, which works for every family with a single image grid.
"""

from vlmforge.analysis.logit_lens import compute_logit_lens
from vlmforge.analysis.metadata import VLMMetadataExtractor, extract_metadata

__all__ = ["VLMMetadataExtractor", "compute_logit_lens", "extract_metadata"]
