"""Legacy VLM Spectra module ``utils``: the vision utilities, now in :mod:`vlmforge.spectra.preprocessing`."""

from vlmforge.spectra.preprocessing import process_vision_info, smart_resize

__all__ = ["process_vision_info", "smart_resize"]
