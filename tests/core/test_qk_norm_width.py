"""q/k norms run at the width they were built for: per head, or over the whole projection (OLMo style)."""

from __future__ import annotations

from transformers import AutoConfig

from vlmforge import HookedVLM
from vlmforge.core.registry import ModelRegistry
from vlmforge.harness.mutants import PASS, run_checks
from vlmforge.tiny import build_tiny_model


def test_whole_projection_qk_norm_is_recomputed_exactly() -> None:
    # Molmo2 norms q/k per head ("qwen3") or over the whole projection ("olmo"), by config; the registered
    # family was scaffolded from the per-head default, the same module must serve the other kind.
    config = AutoConfig.for_model("molmo2")
    config.text_config.qk_norm_type = "olmo"
    tiny = build_tiny_model(config)
    adapter_class = ModelRegistry.adapters()["molmo2"]
    vlm = HookedVLM(
        tiny.model,
        adapter_class.processor_class(tiny.processor, adapter_class.spec),
        adapter=adapter_class(tiny.model),
    )
    attn = vlm.adapter.get_lm_attn(0)
    assert attn.q_norm.weight.shape[0] == vlm.adapter.lm_num_heads * vlm.adapter.lm_head_dim
    results = run_checks(vlm, only=["attention_vs_eager", "cached_patterns_vs_eager"])
    assert results == {"attention_vs_eager": PASS, "cached_patterns_vs_eager": PASS}, results
