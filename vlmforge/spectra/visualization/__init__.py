"""VLM Spectra's ``visualization`` module: the HTML logit lens and the patch overview."""

from vlmforge.analysis.html import create_logit_lens
from vlmforge.analysis.patch_overview import generate_patch_overview

__all__ = ["create_logit_lens", "generate_patch_overview"]
