"""``benchmarks/bench_conditions.py`` runs end to end on a very small model and reports what it claims.

The benchmark runs in this process (one tiny model build, one timed round); one condition's peak memory
is measured the way the real run measures it, in a fresh subprocess (``--measure-memory``).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_conditions.py"
TINY = ["--layers", "2", "--hidden", "64", "--heads", "4", "--target-tokens", "60", "--threads", "1"]


def load_script() -> ModuleType:
    if str(SCRIPT.parent) not in sys.path:  # as `python benchmarks/bench_conditions.py` has it
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_conditions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def run(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("bench") / "conditions.json"
    try:
        bench.main([*TINY, "--repeats", "1", "--warmup", "0", "--memory", "E", "--json", str(path)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(path.read_text())


def test_json_has_every_condition_with_positive_times(bench: ModuleType, run: dict) -> None:
    assert set(run["timing"]["median_s"]) == set(bench.CONDITIONS)
    assert set(run["conditions"]) == set(bench.CONDITIONS)
    for key, samples in run["timing"]["samples_s"].items():
        assert len(samples) == 1 and all(s > 0 for s in samples), key
        assert run["timing"]["median_s"][key] == statistics.median(samples)
    model = run["model"]
    assert model["tokens"] >= 60 and model["image_tokens"] > 0 and model["layers"] == 2
    assert model["hidden"] == 64
    for key in ("platform", "cpu_count", "torch", "transformers", "torch_threads"):
        assert key in run["machine"], key


def test_ratios_are_computed_from_the_medians(run: dict) -> None:
    medians = run["timing"]["median_s"]
    expected = {
        "A/Baseline": ("A", "baseline"),
        "B/A": ("B", "A"),
        "D/C": ("D", "C"),
        "E/Baseline": ("E", "baseline"),
        "F/Baseline": ("F", "baseline"),
        "B/Baseline": ("B", "baseline"),
        "D/Baseline": ("D", "baseline"),
    }
    for name, (top, bottom) in expected.items():
        assert run["ratios"][name] == pytest.approx(medians[top] / medians[bottom], rel=1e-12), name


def test_self_check_proves_each_condition(run: dict) -> None:
    checks = run["checks"]
    assert set(checks) >= {"baseline", "A", "B", "C", "D", "E", "F"}
    assert all(check["ok"] for check in checks.values()), checks
    # E and F replace values: the patched activations are read back and the logits move.
    assert checks["E"]["delta_1_replaced_layer_0_output"] is True
    assert checks["E"]["delta_1_max_abs_logit_diff"] > 0
    assert checks["E"]["identity_patch_max_abs_logit_diff"] == 0.0
    assert checks["E"]["hook_calls_per_forward"] == 2
    assert checks["F"]["head_zero_in_every_layer"] is True and checks["F"]["max_abs_logit_diff"] > 0


def test_memory_is_measured_in_a_fresh_subprocess(run: dict) -> None:
    memory = run["memory"]
    assert set(memory) == {"E"}
    measured = memory["E"]
    assert "error" not in measured, measured
    assert measured["rss_peak_increase_mib"] >= 0 and measured["rss_loaded_mib"] > 0
    assert measured["torch_alloc_peak_mib"] > 0
    assert measured["method"]


def test_self_check_catches_a_patch_that_does_not_replace(bench: ModuleType, monkeypatch) -> None:
    """The check is sensitive: a condition E whose hook returns None (reads only) fails it."""
    args = bench.parse_args([*TINY, "--no-check"])
    threads = torch.get_num_threads()
    try:
        setup = bench.build_setup(args)
    finally:
        torch.set_num_threads(threads)

    def reading_only(setup):
        def read(value, hook):
            if setup.calls is not None:
                setup.calls.append(hook.name)

        return read

    monkeypatch.setattr(bench, "_shift_resid", reading_only)
    monkeypatch.setattr(bench, "_zero_head", reading_only)
    checks = bench.verify(setup)
    assert not checks["E"]["ok"] and not checks["E"]["delta_1_replaced_layer_0_output"]
    assert not checks["F"]["ok"] and not checks["F"]["head_zero_in_every_layer"]
    assert checks["B"]["ok"] and checks["D"]["ok"]
