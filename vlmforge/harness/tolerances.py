"""Numerical tolerances of the conformance checks, stated once, per dtype.

All comparisons use the *maximum* absolute difference: a mean hides one wrong row, which is
exactly what a broken mask or a shifted RoPE position produces as sequences grow.

* ``pattern`` (absolute; probabilities are <= 1): attention recomputed by the adapter vs eager
  ``output_attentions``. The adapter performs eager's own operations in the same order and dtype,
  so on one device the two agree bit for bit (measured 0.0 in fp32, fp16 and bf16 on the tiny
  models); the tolerance only leaves room for another kernel rounding one value differently:
  1e-5 in fp32, about two fp16 ulps below 1.0 (1e-3) and one bf16 ulp below 1.0 (4e-3). Looser
  would let real bugs through: with near-uniform attention (the tiny models' before their init stds
  were scaled with width) a skipped RoPE moved patterns by only 1.3e-2 and a wrong scale by 1.2e-2;
  with the width-scaled init, by 0.54 and 0.71 (Qwen2.5-VL and LLaVA tiny models, fp32).
* ``activation`` (relative): the same quantity read two ways (cache vs ``output_hidden_states``,
  per-head outputs summed vs ``hook_out``, MLP decomposition, logit lens).
* ``batch`` (relative): one item inside a left-padded batch vs the same item alone; padding changes
  matmul shapes, so kernels may reassociate sums, and the rounding compounds over layers.

Relative tolerances are multiplied by ``max(1, max |reference|)``: a real checkpoint's logits reach
tens, where one bf16 ulp is already 0.125.
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
    torch.float16: Tolerance(pattern=1e-3, activation=4e-3, batch=1e-2),
    torch.bfloat16: Tolerance(pattern=4e-3, activation=3e-2, batch=6e-2),
}


def tolerance_for(dtype: torch.dtype) -> Tolerance:
    """The tolerances for a model running in ``dtype`` (unknown dtypes get the bf16 ones)."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])


def scaled(relative: float, reference: torch.Tensor) -> float:
    """A relative tolerance as an absolute one for ``reference``: ``relative * max(1, max |reference|)``."""
    magnitude = float(reference.detach().abs().max()) if reference.numel() else 0.0
    return relative * max(1.0, magnitude)
