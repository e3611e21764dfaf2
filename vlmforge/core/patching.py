"""Ready-made patch functions (VLM Spectra's helpers), usable from native hooks and VLM Spectra hooks.

Each helper is a callable object that accepts both calling conventions:

* native — ``helper(activation, hook_point)``, as ``HookedVLM.run_with_hooks`` calls it; q/k/v/z arrive
  split into heads (``[B, L, heads, d_h]``), which the activation helpers handle by working on the
  flat ``[B, L, heads * d_h]`` view of the same storage;
* VLM Spectra — ``helper(module, args, kwargs, value)`` with flat values (``vlmforge.spectra``).

Activation helpers edit row ``batch_idx`` of the value **in place** and return the same tensor;
``token_idx=None`` selects every position, any other index (negative ones included) is accepted.
The mask helpers are for ``attn.hook_mask`` (the 4-D mask the attention receives): a float mask is
additive (``-inf`` blocks), a boolean mask (SDPA with padding) is ``True`` where attended.
"""

from __future__ import annotations

from typing import Any

import torch


def _value_of(call_args: tuple[Any, ...]) -> torch.Tensor:
    """The activation, whichever convention the helper was called with."""
    if len(call_args) == 2:  # native: (activation, hook_point)
        return call_args[0]
    if len(call_args) == 4:  # VLM Spectra: (module, args, kwargs, value)
        return call_args[3]
    raise TypeError(
        f"patch helpers are called as fn(activation, hook_point) or fn(module, args, kwargs, value); "
        f"got {len(call_args)} arguments"
    )


class _ActivationHelper:
    """Base class: select ``[batch_idx, token_idx]`` of the flat view and edit it in place."""

    def __init__(self, token_idx: Any = None, batch_idx: int = 0) -> None:
        self.token_idx = token_idx
        self.batch_idx = batch_idx

    def __call__(self, *call_args: Any) -> torch.Tensor:
        value = _value_of(call_args)
        if value.dim() == 4:  # native split heads: edit the flat view of the same storage
            flat = value.reshape(*value.shape[:2], -1)
            self._edit(flat)
            if flat.data_ptr() != value.data_ptr():  # reshape had to copy: write the edit back
                value.copy_(flat.view_as(value))
        else:
            self._edit(value)
        return value

    def _select(self, value: torch.Tensor) -> Any:
        return (self.batch_idx,) if self.token_idx is None else (self.batch_idx, self.token_idx)

    def _edit(self, value: torch.Tensor) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, torch.Tensor))
        return f"{type(self).__name__}({fields})"


class PatchActivation(_ActivationHelper):
    """Assign ``replacement`` (``[L, D]`` or ``[D]``) to the selection, as given (no cast)."""

    def __init__(self, replacement: torch.Tensor, token_idx: Any = None, batch_idx: int = 0) -> None:
        super().__init__(token_idx, batch_idx)
        self.replacement = replacement

    def _edit(self, value: torch.Tensor) -> None:
        value[self._select(value)] = self.replacement


class ZeroAblation(_ActivationHelper):
    """Set the selection to zero."""

    def _edit(self, value: torch.Tensor) -> None:
        value[self._select(value)] = 0


class AddActivation(_ActivationHelper):
    """Add ``scale * direction`` to the selection (``direction`` cast to the value's device and dtype)."""

    def __init__(
        self, direction: torch.Tensor, scale: float = 1.0, token_idx: Any = None, batch_idx: int = 0
    ) -> None:
        super().__init__(token_idx, batch_idx)
        self.direction = direction
        self.scale = scale

    def _edit(self, value: torch.Tensor) -> None:
        direction = self.direction.to(device=value.device, dtype=value.dtype)
        value[self._select(value)] += self.scale * direction


class ScaleActivation(_ActivationHelper):
    """Multiply the selection by ``scale``."""

    def __init__(self, scale: float, token_idx: Any = None, batch_idx: int = 0) -> None:
        super().__init__(token_idx, batch_idx)
        self.scale = scale

    def _edit(self, value: torch.Tensor) -> None:
        value[self._select(value)] *= self.scale


class PatchHead:
    """Write head ``head_idx`` of ``attn.hook_z`` with ``replacement`` (``[d_h]`` or ``[L, d_h]``).

    A flat ``[B, L, H * d_h]`` value (VLM Spectra) is viewed as ``[B, L, num_heads, width // num_heads]``;
    a native ``[B, L, H, d_h]`` value is written directly. ``replacement`` is cast to the value's
    device and dtype. Edits in place and returns the same tensor.

    Raises:
        ValueError: the value is neither 3-D (flat) nor 4-D (split heads).
    """

    def __init__(
        self,
        head_idx: int,
        replacement: torch.Tensor,
        num_heads: int,
        token_idx: Any = None,
        batch_idx: int = 0,
    ) -> None:
        self.head_idx = head_idx
        self.replacement = replacement
        self.num_heads = num_heads
        self.token_idx = token_idx
        self.batch_idx = batch_idx

    def __call__(self, *call_args: Any) -> torch.Tensor:
        value = _value_of(call_args)
        if value.dim() == 3:
            batch, length, width = value.shape
            heads = value.view(batch, length, self.num_heads, width // self.num_heads)
        elif value.dim() == 4 and len(call_args) == 2:
            heads = value
        else:
            raise ValueError(f"PatchHead expects a [batch, seq, heads * d_h] tensor, got {value.dim()}-D")
        replacement = self.replacement.to(device=value.device, dtype=value.dtype)
        tokens = slice(None) if self.token_idx is None else self.token_idx
        heads[self.batch_idx, tokens, self.head_idx] = replacement
        return value


class BlockAttention:
    """For ``attn.hook_mask``: query ``src`` may not attend to key ``tgt``, for each ``(src, tgt)`` pair.

    Returns a clone of the mask with ``[batch_idx, :, src, tgt]`` set to ``-inf`` (``False`` for a
    boolean mask).
    """

    def __init__(self, indices_list: list[tuple[int, int]], batch_idx: int = 0) -> None:
        self.indices_list = list(indices_list)
        self.batch_idx = batch_idx

    def __call__(self, *call_args: Any) -> torch.Tensor:
        mask = _value_of(call_args).clone()
        blocked: Any = False if mask.dtype == torch.bool else float("-inf")
        for source, target in self.indices_list:
            mask[self.batch_idx, :, source, target] = blocked
        return mask


class SetAttentionMask:
    """For ``attn.hook_mask``: ignore the incoming mask and use ``mask`` instead."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, *call_args: Any) -> torch.Tensor:
        _value_of(call_args)
        return self.mask


__all__ = [
    "AddActivation",
    "BlockAttention",
    "PatchActivation",
    "PatchHead",
    "ScaleActivation",
    "SetAttentionMask",
    "ZeroAblation",
]
