"""``ActivationCache``: what ``HookedVLM.run_with_cache`` yields (a ``dict`` of hook name -> tensor).

A ``dict`` subclass, so code that treats the cache as a mapping keeps working, plus VLM Spectra's
helpers: :meth:`ActivationCache.stack` (one tensor from every layer matching a pattern) and
:meth:`ActivationCache.detach`.
"""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"\.(\d+)\.")


def layer_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regex matching whole hook names, ``*`` standing for a layer number (digits)."""
    return re.compile("^" + r"\d+".join(re.escape(part) for part in pattern.split("*")) + "$")


class ActivationCache(dict):
    """Cached activations keyed by hook name (``lm.blocks.{i}.<hook type>``)."""

    @property
    def _data(self) -> dict:
        """The entries (VLM Spectra keeps them in ``_data``; here the cache is the dict itself)."""
        return self

    def detach(self) -> ActivationCache:
        """Detach every tensor value in place; returns the cache."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.detach()
        return self

    def stack(self, pattern: str) -> torch.Tensor:
        """Stack the entries whose name matches ``pattern`` into one tensor ``[n, ...]``.

        ``*`` in the pattern matches a layer number (digits); the matches are ordered by layer and moved
        to the first match's device. A pattern without ``*`` gives ``[1, ...]``.

        Raises:
            KeyError: no entry matches.
        """
        regex = layer_pattern(pattern)
        matches = [key for key in self if regex.match(key)]
        if not matches:
            raise KeyError(f"no cache entry matches {pattern!r}; cached: {sorted(self)}")

        def layer(key: str) -> tuple[int, ...]:
            return tuple(int(number) for number in _LAYER.findall(key))

        matches.sort(key=layer)
        device = self[matches[0]].device
        return torch.stack([self[key].to(device) for key in matches])
