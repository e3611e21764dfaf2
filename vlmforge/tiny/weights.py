"""Random norm weights and biases for tiny models, so that mixing them up changes the output.

HF initialises every norm weight to a constant (1, or 0 where the norm computes ``1 + weight``) and every
bias to 0. With those values, applying ``q_norm`` to k, normalising after RoPE instead of before, using the
wrong final norm or dropping the q/k/v bias in a recomputation all give *exactly* the right numbers, so a
conformance check on a tiny model cannot see them. This module moves each of those parameters off its init
value, generically: by module type and parameter name, never by model name.

The same goes for the zero-initialised gates of a residual branch (Flamingo / IDEFICS' ``tanh(alpha)``
cross-attention gates, Llama 3.2 Vision's cross-attention gates, zero-init layer scales): at 0 the branch,
often the image's only way into the language model, adds exactly nothing, so a model that ignores the
image, or a hook that misses the branch, passes every check. They are moved off zero as well.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "GATE_RANGE",
    "NORM_BIAS_SPREAD",
    "NORM_WEIGHT_SPREAD",
    "is_gate",
    "is_norm",
    "randomize_norms_and_biases",
]

# Norm weights become init + U(-0.5, 0.5): per-channel gains in [0.5, 1.5] for a `weight * x` norm, and the
# same effective gains for a `(1 + weight) * x` norm (init 0), whichever convention the module uses. Gains of
# that size keep every activation within a factor 1.5^depth of the original: finite in fp16 and bf16.
NORM_WEIGHT_SPREAD = 0.5
# Biases become init + U(-0.1, 0.1): about half the typical q/k/v projection output at the tiny widths, so
# dropping one is visible far above fp32 noise, yet small against normalised activations.
NORM_BIAS_SPREAD = 0.1

# Zero-initialised gates become +-U(0.25, 0.75): tanh of that opens a branch to 25-65%, far above fp32 noise,
# and a branch's output at most 0.75x its size keeps activations finite in fp16 and bf16 at the tiny depths.
GATE_RANGE = (0.25, 0.75)

_TORCH_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer: a torch norm, or any class named ``*Norm*`` with a per-channel weight.

    The 1-D weight condition keeps a projection that merely has "Norm" in its class name out: its weight
    is a matrix and must not be shifted by O(1).
    """
    if isinstance(module, _TORCH_NORMS):
        return True
    weight = getattr(module, "weight", None)
    return "Norm" in type(module).__name__ and isinstance(weight, nn.Parameter) and weight.dim() == 1


def is_gate(name: str, parameter: nn.Parameter) -> bool:
    """A zero-initialised gate or scale: a parameter (not a bias) of at most one non-unit dimension whose
    every value is exactly 0 after init.

    The one-dimension condition keeps zero-initialised embeddings and projections (position tables, register
    tokens: matrices) out; a bias (``bias``, ``in_proj_bias``...) is no gate.
    """
    return (
        not name.endswith("bias")
        and parameter.numel() > 0
        and sum(size > 1 for size in parameter.shape) <= 1
        and not bool(parameter.any())
    )


def _open_gate(parameter: nn.Parameter) -> None:
    low, high = GATE_RANGE
    magnitude = torch.rand(parameter.shape, dtype=torch.float32) * (high - low) + low
    sign = torch.where(torch.rand(parameter.shape) < 0.5, -1.0, 1.0)
    parameter.copy_((magnitude * sign).to(parameter.device, parameter.dtype))


def _shift(parameter: nn.Parameter, spread: float) -> None:
    # Noise is drawn in fp32 whatever the model dtype, so a bf16 build is the rounded fp32 build.
    noise = (torch.rand(parameter.shape, dtype=torch.float32) * 2 - 1) * spread
    parameter.copy_((parameter.float() + noise.to(parameter.device)).to(parameter.dtype))


@torch.no_grad()
def randomize_norms_and_biases(model: nn.Module) -> list[str]:
    """Shift every norm weight and bias and every other module's bias off its init value, and open every
    zero-initialised gate (:func:`is_gate`), in place.

    Draws from the global torch RNG in module order, so the caller's seed makes it reproducible (build
    inside ``torch.random.fork_rng`` to leave the caller's random state alone). Which modules *have* a bias
    is not changed: that is the architecture's (e.g. Qwen2 has q/k/v biases and a bias-free o_proj).

    Returns:
        The names of the parameters that were shifted.
    """
    shifted: list[str] = []
    for module_name, module in model.named_modules():
        norm = is_norm(module)
        for name, parameter in module.named_parameters(recurse=False):
            if norm and name == "weight":
                _shift(parameter, NORM_WEIGHT_SPREAD)
            elif name == "bias":
                _shift(parameter, NORM_BIAS_SPREAD)
            elif not norm and is_gate(name, parameter):
                _open_gate(parameter)
            else:
                continue
            shifted.append(f"{module_name}.{name}" if module_name else name)
    return shifted
