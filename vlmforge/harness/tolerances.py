"""Numerical tolerances of the conformance checks, stated once, per dtype.

All comparisons use the *maximum* absolute difference: a mean hides one wrong row, which is
exactly what a broken mask or a shifted RoPE position produces as sequences grow.

* ``pattern``: attention probabilities recomputed by the adapter vs eager ``output_attentions``.
  In fp32 the recomputation performs the same operations as eager, so 1e-5 leaves room only for
  matmul reassociation. bf16 / fp16 eager returns weights rounded to the dtype (8 / 11 mantissa bits).
* ``activation``: the same quantity read two ways (cache vs ``output_hidden_states``, sum of
  per-head outputs vs ``hook_out``, MLP decomposition, logit lens).
* ``batch``: one item inside a left-padded batch vs the same item alone; padding changes matmul
  shapes, so kernels may reassociate sums differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    pattern: float
    activation: float
    batch: float


TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(pattern=1e-5, activation=1e-4, batch=1e-4),
    torch.float16: Tolerance(pattern=5e-3, activation=5e-2, batch=5e-2),
    torch.bfloat16: Tolerance(pattern=2e-2, activation=1e-1, batch=1e-1),
}


def tolerance_for(dtype: torch.dtype) -> Tolerance:
    """The tolerances for a model running in ``dtype`` (unknown dtypes get the bf16 ones)."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])
