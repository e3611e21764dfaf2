"""The conformance checks. Each one proves one part of an adapter right, or fails saying where.

A check takes a :class:`HookedVLM`, returns a :class:`CheckResult` (the measured difference and a
one-line detail) and raises :class:`CheckFailure` when the adapter is wrong. Checks are registered
in :data:`CHECKS` (see :mod:`.registry`, which also says how to add your own); the pytest suite runs
each one as its own test so the conformance matrix shows exactly which one failed. The checks never
assume tiny dimensions, so the same code runs on real checkpoints in bf16.

One module per part of the contract, imported here in matrix order:

* :mod:`.contract` — members of the adapter contract, module shapes, hook shapes;
* :mod:`.image_tokens` — the image token, where image features land, the fewest an image may give;
* :mod:`.capabilities` — declared capability flags (and mixed-size image batching) vs measured;
* :mod:`.attention` — recomputed scores and patterns vs eager attention;
* :mod:`.cached_attention` — scores and patterns as read from ``run_with_cache`` (forward, padded
  batch, ``generate``) vs eager attention;
* :mod:`.activations` — cached activations vs the model's outputs, non-invasive caching;
* :mod:`.hook_values` — every hook type's cached value vs a reference computed without the hooks;
* :mod:`.generation` — ``generate`` vs the forward pass, batched vs single generation;
* :mod:`.patching` — ``run_with_hooks``: patches land on the named layer only, identity / None are
  no-ops, wildcards hit every layer once.
"""

from vlmforge.harness.checks.registry import (
    CHECKS,
    Check,
    CheckResult,
    check,
    missing_capability,
    register_check,
)

# Importing a section registers its checks: this order is the order of the matrix rows.
# isort: off
from vlmforge.harness.checks import contract
from vlmforge.harness.checks import image_tokens
from vlmforge.harness.checks import capabilities
from vlmforge.harness.checks import attention
from vlmforge.harness.checks import cached_attention
from vlmforge.harness.checks import activations
from vlmforge.harness.checks import hook_values
from vlmforge.harness.checks import generation
from vlmforge.harness.checks import patching

# isort: on
from vlmforge.harness.checks.attention import compare_attention_to_eager, real_query_rows
from vlmforge.harness.compare import CheckFailure

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "CheckResult",
    "activations",
    "attention",
    "cached_attention",
    "capabilities",
    "check",
    "compare_attention_to_eager",
    "contract",
    "generation",
    "hook_values",
    "image_tokens",
    "missing_capability",
    "patching",
    "real_query_rows",
    "register_check",
]
