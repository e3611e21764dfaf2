"""VLM Spectra's ``ModelAdapter``: vlmforge's adapter base class (every family's adapter is one).

It carries VLM Spectra's surface: ``SUPPORTED_MODELS``, ``MODEL_CLASS``, ``PROCESSOR_CLASS``,
``set_processor``, ``_original_attn_impl``, the ``get_lm_*`` accessors, dimensions,
``compute_attention_{patterns,scores}``, ``compute_per_head_contributions``, ``get_image_token_id``,
``format_cache_item`` / ``format_cache`` and ``has_strict_residual_stream``.
"""

from vlmforge.core.adapter import ModelAdapter

__all__ = ["ModelAdapter"]
