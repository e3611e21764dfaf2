"""Scaffold research on a 72B config (meta device): time and memory after the imports are done.

    python benchmarks/bench_research.py [--source Qwen/Qwen2.5-VL-72B-Instruct] [--runs 5]
        [--variants structure,full] [--json benchmarks/results/research.json]

``research(source, measure=False)`` (variant ``structure``) answers every question from the config and
the module tree built on the meta device; ``research(source)`` (variant ``full``, what
``scaffold-new-model`` runs) also builds a tiny random model and measures the capability flags on it.

Each variant runs in fresh interpreters that first import ``vlmforge.scaffold.research`` (the import
baseline), then:

* timing + RSS: the first call (which still pays transformers' lazy import of the family's modelling
  module), then ``--runs - 1`` more calls (median); the RSS high-water mark (VmHWM, reset after the
  imports via ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable) above the RSS right
  after the imports;
* tracemalloc: a second fresh interpreter traces Python allocations from the import baseline through
  one call (tracemalloc slows Python code, so it is kept out of the timed process).

Targets (from the issue): <= 0.5 s per call after import, <= 50 MB above the import baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from process_memory import MIB, reset_rss_peak, ru_maxrss_mib, status_kib  # benchmarks/ is on sys.path

DEFAULT_SOURCE = "Qwen/Qwen2.5-VL-72B-Instruct"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "research.json"
TARGET_SECONDS = 0.5
TARGET_MB = 50.0
VARIANTS = {"structure": {"measure": False}, "full": {"measure": True}}


# ----------------------------------------------------------------------------- in the fresh interpreter
def measure_time(source: str, variant: str, runs: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: imports, then ``runs`` timed calls; RSS above the import baseline."""
    import gc

    started = time.perf_counter()
    from vlmforge.scaffold.research import research

    import_seconds = time.perf_counter() - started
    gc.collect()
    baseline_kib = status_kib("VmRSS")
    resettable = baseline_kib is not None and reset_rss_peak()
    ru_before = ru_maxrss_mib()
    seconds, report = [], None
    for _ in range(runs):
        started = time.perf_counter()
        report = research(source, **VARIANTS[variant])
        seconds.append(time.perf_counter() - started)
        if len(seconds) == 1:
            first_peak = (
                ((status_kib("VmHWM") or 0) - baseline_kib) / 1024
                if resettable
                else max(0.0, ru_maxrss_mib() - ru_before)
            )
    all_peak = (
        ((status_kib("VmHWM") or 0) - baseline_kib) / 1024
        if resettable
        else max(0.0, ru_maxrss_mib() - ru_before)
    )
    config = report.source.config.get_text_config(decoder=True)
    return {
        "import_s": import_seconds,
        "rss_after_import_mib": (baseline_kib or 0) / 1024,
        "first_s": seconds[0],
        "later_s": seconds[1:],
        "median_later_s": statistics.median(seconds[1:]) if len(seconds) > 1 else None,
        "rss_peak_first_call_mib": first_peak,
        "rss_peak_all_calls_mib": all_peak,
        "rss_method": (
            "VmHWM (reset after import via /proc/self/clear_refs) minus VmRSS after import"
            if resettable
            else "ru_maxrss after minus before the calls"
        ),
        "report_timings_s": dict(report.timings),
        "config": {
            "model_type": report.model_type,
            "hidden": config.hidden_size,
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "kv_heads": getattr(config, "num_key_value_heads", None),
            "intermediate": getattr(config, "intermediate_size", None),
            "vocab": config.vocab_size,
        },
        "language_model_evidence": report["language_model"].evidence
        if "language_model" in report.answers
        else None,
        "open_answers": sorted(k for k, a in report.answers.items() if a.status in ("unknown", "hand_edit")),
    }


def measure_tracemalloc(source: str, variant: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: imports, then one call under tracemalloc (Python allocations only)."""
    import gc
    import tracemalloc

    from vlmforge.scaffold.research import research

    gc.collect()
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    research(source, **VARIANTS[variant])
    current, peak = tracemalloc.get_traced_memory()
    top = tracemalloc.take_snapshot().statistics("filename")[:5]
    tracemalloc.stop()
    return {
        "tracemalloc_peak_mib": (peak - baseline) / MIB,
        "tracemalloc_retained_mib": (current - baseline) / MIB,
        "tracemalloc_top_retained": [f"{s.traceback[0].filename}: {s.size / MIB:.1f} MiB" for s in top],
    }


# --------------------------------------------------------------------------------------------- driver
def _child(mode: str, source: str, variant: str, runs: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--source", source]
    command += ["--variants", variant, "--runs", str(runs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": f"exit {result.returncode}: {result.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "ok" if value <= target else "OVER"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help="hub id / stored reference / model_type / dir"
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="calls per timed process (first + median of rest)"
    )
    parser.add_argument("--variants", default="structure,full", help="comma-separated: structure, full")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--child", choices=("time", "tracemalloc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.child:
        measured = (
            measure_time(args.source, variants[0], max(1, args.runs))
            if args.child == "time"
            else measure_tracemalloc(args.source, variants[0])
        )
        print(json.dumps(measured))
        return measured

    result: dict[str, Any] = {
        "machine": machine(),
        "source": args.source,
        "targets": {"seconds_after_import": TARGET_SECONDS, "mb_above_import": TARGET_MB},
        "variants": {},
    }
    for variant in variants:
        timed = _child("time", args.source, variant, max(2, args.runs))
        traced = _child("tracemalloc", args.source, variant, 1)
        result["variants"][variant] = {**timed, **traced}
    result["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    _print(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return result


def _print(result: dict[str, Any]) -> None:
    print(
        f"research({result['source']!r}) after import; targets <= {TARGET_SECONDS} s, <= {TARGET_MB:.0f} MB"
    )
    header = f"{'variant':<11}{'import s':>9}{'first s':>9}{'median s':>10}{'RSS+ MiB':>10}"
    header += f"{'tracemalloc MiB':>17}  verdict"
    print(header)
    for variant, measured in result["variants"].items():
        if "error" in measured:
            print(f"{variant:<11} failed: {measured['error']}")
            continue
        median = measured.get("median_later_s")
        rss = measured.get("rss_peak_all_calls_mib")
        traced = measured.get("tracemalloc_peak_mib")
        memory = (
            max(v for v in (rss, traced) if v is not None) if rss is not None or traced is not None else None
        )
        verdict = (
            f"time {_verdict(median, TARGET_SECONDS)} "
            f"(first call {_verdict(measured['first_s'], TARGET_SECONDS)}), "
            f"memory {_verdict(memory and memory * MIB / 1e6, TARGET_MB)}"
        )
        print(
            f"{variant:<11}{measured['import_s']:>9.2f}{measured['first_s']:>9.3f}"
            f"{median if median is not None else float('nan'):>10.3f}{rss:>10.1f}"
            f"{traced if traced is not None else float('nan'):>17.1f}  {verdict}"
        )
        config = measured["config"]
        print(
            f"  config: {config['model_type']} hidden {config['hidden']}, {config['layers']} layers, "
            f"{config['heads']}/{config['kv_heads']} heads, ffn {config['intermediate']}, "
            f"vocab {config['vocab']}"
        )
        phases = ", ".join(f"{k} {v:.3f}" for k, v in measured["report_timings_s"].items())
        print(f"  phases of the last call (s): {phases}")
        print(
            f"  RSS: {measured['rss_method']}; "
            f"first call alone +{measured['rss_peak_first_call_mib']:.1f} MiB"
        )


if __name__ == "__main__":
    main()
