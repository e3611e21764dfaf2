"""Legacy VLM Spectra module ``logit_lens``: now in ``.analysis`` and ``.visualization``."""

from vlmforge.spectra.analysis import compute_logit_lens
from vlmforge.spectra.visualization import create_logit_lens

__all__ = ["compute_logit_lens", "create_logit_lens"]
