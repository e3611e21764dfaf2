"""Legacy VLM Spectra module ``models.vlm_metadata``: ``VLMMetadataExtractor``."""

from vlmforge.spectra.analysis import VLMMetadataExtractor

__all__ = ["VLMMetadataExtractor"]
