"""Cost of interpretability conditions relative to a plain forward, on VLM Spectra's conditions.

    python benchmarks/bench_conditions.py                       # tiny qwen2_5_vl scaled up, ~1,000 tokens
    python benchmarks/bench_conditions.py --family qwen3_vl --layers 8 --hidden 512 --target-tokens 2000
    python benchmarks/bench_conditions.py --checkpoint Qwen/Qwen2.5-VL-3B-Instruct --device cuda

Conditions (each one forward pass of the same inputs; keys as in the JSON):

    baseline        vlm.forward(inputs), the model's default attention (SDPA where it has it)
    baseline_eager  the same forward with the attention implementation forced to eager
    A               forward(inputs, output_hidden_states=True)
    B               run_with_cache(lm.blocks.*.hook_resid_pre + lm.blocks.*.hook_resid_post)
    C               forward(inputs, output_attentions=True)   (eager for that call only)
    D               run_with_cache(lm.blocks.*.attn.hook_pattern)   (SDPA forward + recomputed patterns)
    E               run_with_hooks(lm.blocks.*.hook_resid_post -> value + delta)   (a real replacement)
    F               run_with_hooks(lm.blocks.*.attn.hook_z -> head 0 zeroed)   (z is [B, L, H, d_h])

Time: ``--warmup`` rounds, then ``--repeats`` interleaved rounds (every condition once per round, the
order rotated each round, so load drift hits all conditions alike); medians, and the ratios
A/Baseline, B/A, D/C, E/Baseline, F/Baseline (plus B, C, D and eager over Baseline) computed from them.

Peak memory: on CPU each condition runs in a fresh subprocess (this script with ``--measure-memory
CONDITION``) that loads the model, runs the condition once as a warm-up, returns freed heap to the OS
(``malloc_trim``), resets the kernel's RSS high-water mark (``/proc/self/clear_refs``) and runs the
condition again: the RSS peak above the RSS right before that run, plus the peak of live torch CPU
allocations during a third run (``torch.profiler`` with ``profile_memory``, the allocator's own
count). On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the run, in process.

Before timing, a self-check (``verify``) proves each condition does what it claims: caches hold every
layer, recomputed patterns match eager attention weights, E and F really replace values (their patched
activations are read back and the logits change), identity patches leave logits bit-identical.

Results go to ``--json`` (default ``benchmarks/results/conditions.json``) with a machine description.
Absolute times depend on the machine; compare ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from process_memory import (  # benchmarks/ is on sys.path
    MIB,
    malloc_trim,
    reset_rss_peak,
    ru_maxrss_mib,
    status_kib,
)

from vlmforge import HookedVLM
from vlmforge.harness.probes import probe_image
from vlmforge.tiny import DimensionCoincidenceError, ShrinkLimits, build_tiny_model

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "conditions.json"
PROMPT = "Describe the image in detail."
FILLER = " Then describe every object, its colour, its position and its size."
RESID = ["lm.blocks.*.hook_resid_pre", "lm.blocks.*.hook_resid_post"]
PATTERN = "lm.blocks.*.attn.hook_pattern"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TORCH_ALLOC_METHOD = "max 'Total Allocated' of torch.profiler(profile_memory=True) CPU events above the start"


# ----------------------------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Setup:
    """A loaded model, its inputs, and the knobs the conditions read.

    Attributes:
        patch_delta: what condition E adds to every ``hook_resid_post`` (0.0 for timing: the value is
            still replaced by a new tensor; ``verify`` also runs a non-zero delta).
        head: the head condition F zeroes in every layer.
        calls: when a list, E/F hook functions append their hook name to it (``verify`` counts them).
    """

    vlm: HookedVLM
    inputs: Any
    description: dict[str, Any]
    patch_delta: float = 0.0
    head: int = 0
    calls: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return self.vlm.device


# ------------------------------------------------------------------------------------------ conditions
def _shift_resid(setup: Setup) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    delta, calls = setup.patch_delta, setup.calls

    def shift(value: torch.Tensor, hook: Any) -> torch.Tensor:
        if calls is not None:
            calls.append(hook.name)
        return value + delta  # a new tensor: the runtime writes it back in place of the layer output

    return shift


def _zero_head(setup: Setup) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    head, calls = setup.head, setup.calls

    def ablate(z: torch.Tensor, hook: Any) -> torch.Tensor:  # z: [B, L, H, d_h]
        if calls is not None:
            calls.append(hook.name)
        z = z.clone()
        z[:, :, head] = 0
        return z

    return ablate


def run_baseline(setup: Setup) -> Any:
    return setup.vlm.forward(setup.inputs)


def run_baseline_eager(setup: Setup) -> Any:
    with setup.vlm.attention_implementation("eager"):
        return setup.vlm.forward(setup.inputs)


def run_a(setup: Setup) -> Any:
    return setup.vlm.forward(setup.inputs, output_hidden_states=True)


def run_b(setup: Setup) -> Any:
    with setup.vlm.run_with_cache(RESID):
        return setup.vlm.forward(setup.inputs)


def run_c(setup: Setup) -> Any:
    return setup.vlm.forward(setup.inputs, output_attentions=True)  # eager for this call only


def run_d(setup: Setup) -> Any:
    with setup.vlm.run_with_cache(PATTERN):
        return setup.vlm.forward(setup.inputs)


def run_e(setup: Setup) -> Any:
    with setup.vlm.run_with_hooks([("lm.blocks.*.hook_resid_post", _shift_resid(setup))]):
        return setup.vlm.forward(setup.inputs)


def run_f(setup: Setup) -> Any:
    with setup.vlm.run_with_hooks([("lm.blocks.*.attn.hook_z", _zero_head(setup))]):
        return setup.vlm.forward(setup.inputs)


@dataclasses.dataclass(frozen=True)
class Condition:
    key: str
    label: str
    what: str
    run: Callable[[Setup], Any]


CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        Condition("baseline", "Baseline", "forward(inputs), default attention (SDPA)", run_baseline),
        Condition(
            "baseline_eager",
            "Baseline (forced eager)",
            "forward(inputs), eager attention",
            run_baseline_eager,
        ),
        Condition("A", "A", "forward(inputs, output_hidden_states=True)", run_a),
        Condition("B", "B", "run_with_cache(hook_resid_pre + hook_resid_post, all layers)", run_b),
        Condition("C", "C", "forward(inputs, output_attentions=True)", run_c),
        Condition("D", "D", "run_with_cache(attn.hook_pattern, all layers)", run_d),
        Condition("E", "E", "run_with_hooks(hook_resid_post -> value + delta, all layers)", run_e),
        Condition("F", "F", "run_with_hooks(attn.hook_z -> head zeroed, all layers)", run_f),
    )
}
#: (name, numerator, denominator): the published ratios first, then context.
RATIOS = (
    ("A/Baseline", "A", "baseline"),
    ("B/A", "B", "A"),
    ("D/C", "D", "C"),
    ("E/Baseline", "E", "baseline"),
    ("F/Baseline", "F", "baseline"),
    ("B/Baseline", "B", "baseline"),
    ("C/Baseline", "C", "baseline"),
    ("D/Baseline", "D", "baseline"),
    ("eager/Baseline", "baseline_eager", "baseline"),
)


def ratios_from(values: dict[str, float]) -> dict[str, float]:
    """Each ratio in :data:`RATIOS` whose two conditions have a positive value."""
    return {
        name: values[top] / values[bottom]
        for name, top, bottom in RATIOS
        if values.get(top) is not None and values.get(bottom)
    }


# --------------------------------------------------------------------------------------- model, inputs
def _limits(args: argparse.Namespace) -> ShrinkLimits:
    head_dim = max(8, args.hidden // args.heads)
    return ShrinkLimits(
        text_hidden=args.hidden,
        text_layers=args.layers,
        text_base_heads=args.heads,
        max_head_dim=head_dim,
        max_query_heads=max(8, args.heads),
        encoder_hidden=args.encoder_hidden,
        encoder_layers=args.encoder_layers,
    )


def load_model(args: argparse.Namespace) -> HookedVLM:
    dtype = DTYPES[args.dtype] if args.dtype else None
    if args.checkpoint:
        return HookedVLM.from_pretrained(args.checkpoint, device=args.device or "auto", dtype=dtype)
    try:
        tiny = build_tiny_model(
            args.family, limits=_limits(args), seed=args.seed, dtype=dtype or torch.float32
        )
    except DimensionCoincidenceError as error:
        raise SystemExit(
            f"{error}\nPick other sizes (--hidden / --heads / --layers / --encoder-hidden)."
        ) from None
    return HookedVLM(tiny.model.to(args.device or "cpu"), tiny.processor)


def _image_grid(processor: Any) -> tuple[Any, int] | None:
    """(image processor, pixels per token side) where the image token count grows with the image."""
    image_processor = getattr(processor, "image_processor", None)
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    size = getattr(image_processor, "size", None)
    if not (isinstance(patch, int) and isinstance(merge, int)) or _size_get(size, "longest_edge") is None:
        return None
    return image_processor, patch * merge


def _size_get(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _allow_pixels(image_processor: Any, pixels: int) -> None:
    """Widen a dynamic-resolution processor's pixel budget (tiny processors cap images at 16 tokens)."""
    size = image_processor.size
    longest, shortest = _size_get(size, "longest_edge"), _size_get(size, "shortest_edge")
    if longest >= pixels and (shortest is None or shortest <= pixels):
        return
    image_processor.size = {
        "shortest_edge": min(shortest or pixels, pixels),
        "longest_edge": max(longest, pixels),
    }


def image_token_count(vlm: HookedVLM, inputs: Any) -> int:
    token = vlm.adapter.get_image_token_id()
    return 0 if token is None else int((inputs["input_ids"] == token).sum())


def build_inputs(vlm: HookedVLM, target_tokens: int) -> tuple[Any, dict[str, Any]]:
    """Inputs of at least ``target_tokens`` tokens: image tokens first (a larger image where the family's
    count grows with the image), then repeated filler text for the rest."""
    grid = _image_grid(vlm.processor)
    if grid is not None:
        image_processor, unit = grid
        _allow_pixels(image_processor, (2 * unit) ** 2)
        probe = vlm.prepare_messages(PROMPT, probe_image(2 * unit, 2 * unit))
        text_tokens = probe["input_ids"].shape[-1] - image_token_count(vlm, probe)
        needed = max(1, target_tokens - text_tokens)
        columns = math.ceil(math.sqrt(needed))
        rows = math.ceil(needed / columns)
        width, height = unit * columns, unit * rows
        _allow_pixels(image_processor, width * height)
    else:
        width, height = 336, 336
    image = probe_image(width, height)

    def prepare(repeats: int) -> Any:
        return vlm.prepare_messages(PROMPT + FILLER * repeats, image)

    inputs, repeats = prepare(0), 0
    if inputs["input_ids"].shape[-1] < target_tokens:
        four = prepare(4)["input_ids"].shape[-1]
        per_repeat = max(1.0, (four - inputs["input_ids"].shape[-1]) / 4)
        repeats = max(1, int((target_tokens - inputs["input_ids"].shape[-1]) / per_repeat))
        inputs = prepare(repeats)
        while inputs["input_ids"].shape[-1] < target_tokens:
            repeats += 1
            inputs = prepare(repeats)
    tokens = int(inputs["input_ids"].shape[-1])
    described = {
        "tokens": tokens,
        "image_tokens": image_token_count(vlm, inputs),
        "image_size": [width, height],
        "filler_repeats": repeats,
        "batch": int(inputs["input_ids"].shape[0]),
    }
    return inputs, described


def describe(vlm: HookedVLM, args: argparse.Namespace, inputs_info: dict[str, Any]) -> dict[str, Any]:
    text = vlm.model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return {
        "model": args.checkpoint or f"tiny/{args.family} (scaled)",
        "model_class": type(vlm.model).__name__,
        "family": vlm.adapter.spec.name,
        "device": str(vlm.device),
        "dtype": str(vlm.dtype).removeprefix("torch."),
        "attn_implementation": vlm.model.config._attn_implementation,
        "runtime": "default attention, eager per output_attentions call",
        "layers": vlm.lm_num_layers,
        "hidden": text.hidden_size,
        "heads": text.num_attention_heads,
        "kv_heads": getattr(text, "num_key_value_heads", text.num_attention_heads),
        "head_dim": head_dim,
        "intermediate": getattr(text, "intermediate_size", None),
        "vocab": text.vocab_size,
        "parameters": sum(p.numel() for p in vlm.model.parameters()),
        **inputs_info,
    }


def build_setup(args: argparse.Namespace) -> Setup:
    if args.threads:
        torch.set_num_threads(args.threads)
    vlm = load_model(args)
    inputs, info = build_inputs(vlm, args.target_tokens)
    return Setup(vlm, inputs, describe(vlm, args, info), head=args.head)


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ---------------------------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_conditions(
    setup: Setup, conditions: Sequence[Condition], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per run of each condition: ``warmup`` untimed rounds, then
    ``repeats`` interleaved rounds (the order rotated each round)."""
    sync = _synchronize(setup.device)
    for _ in range(warmup):
        for condition in conditions:
            condition.run(setup)
    wall: dict[str, list[float]] = {c.key: [] for c in conditions}
    cpu: dict[str, list[float]] = {c.key: [] for c in conditions}
    for round_index in range(repeats):
        shift = round_index % len(conditions)
        for condition in [*conditions[shift:], *conditions[:shift]]:
            sync()
            started, cpu_started = time.perf_counter(), time.process_time()
            output = condition.run(setup)
            sync()
            wall[condition.key].append(time.perf_counter() - started)
            cpu[condition.key].append(time.process_time() - cpu_started)
            del output
    return wall, cpu


# ---------------------------------------------------------------------------------------------- memory


def torch_cpu_peak_mib(run: Callable[[], Any]) -> float | None:
    """Peak of live torch CPU allocations during ``run`` above those at its start (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as folder:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            output = run()
        del output
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    totals = [
        (event["args"]["Total Allocated"], event["args"].get("Bytes", 0))
        for event in events
        if event.get("name") == "[memory]" and event.get("args", {}).get("Device Type") == 0
    ]
    if not totals:
        return None
    start = totals[0][0] - totals[0][1]
    return (max(total for total, _ in totals) - start) / MIB


def measure_memory_here(setup: Setup, condition: Condition) -> dict[str, Any]:
    """Peak memory of one run of ``condition`` in this process (see the module docstring for the method)."""
    if setup.device.type == "cuda":
        sync = _synchronize(setup.device)
        condition.run(setup)  # warm-up
        gc.collect()
        torch.cuda.empty_cache()
        sync()
        before = torch.cuda.memory_allocated(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
        output = condition.run(setup)
        sync()
        peak = torch.cuda.max_memory_allocated(setup.device) - before
        del output
        return {
            "method": "torch.cuda.max_memory_allocated above the allocation before the run",
            "cuda_peak_mib": peak / MIB,
        }

    loaded_rss = (status_kib("VmRSS") or 0) / 1024
    condition.run(setup)  # warm-up: lazy initialisation and first-call allocations
    gc.collect()
    malloc_trim()
    before_kib = status_kib("VmRSS")
    if before_kib is not None and reset_rss_peak():
        output = condition.run(setup)
        peak_kib = status_kib("VmHWM") or before_kib
        rss_method = (
            "VmHWM reset via /proc/self/clear_refs, minus VmRSS before the run (after warm-up + malloc_trim)"
        )
        rss_increase = (peak_kib - before_kib) / 1024
    else:  # no resettable high-water mark: ru_maxrss, which a warm-up of the same condition would hide
        rss_method = "ru_maxrss after minus before the run (high-water mark not resettable here)"
        before = ru_maxrss_mib()
        output = condition.run(setup)
        rss_increase = max(0.0, ru_maxrss_mib() - before)
    del output
    gc.collect()
    return {
        "method": rss_method,
        "rss_loaded_mib": loaded_rss,
        "rss_peak_increase_mib": rss_increase,
        "torch_alloc_peak_mib": torch_cpu_peak_mib(lambda: condition.run(setup)),
        "torch_alloc_method": TORCH_ALLOC_METHOD,
    }


_MODEL_OPTIONS = (
    "family",
    "checkpoint",
    "layers",
    "hidden",
    "heads",
    "encoder_hidden",
    "encoder_layers",
    "target_tokens",
    "threads",
    "dtype",
    "device",
    "seed",
    "head",
)


def _model_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for name in _MODEL_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def measure_memory_in_subprocess(args: argparse.Namespace, key: str, timeout: float = 900) -> dict[str, Any]:
    """Run ``--measure-memory key`` in a fresh interpreter; its JSON result (or the error)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-memory", key, *_model_argv(args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": f"exit {result.returncode}: {result.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------ self-check
def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 5e-2


def verify(setup: Setup) -> dict[str, dict[str, Any]]:
    """Check that each condition does what it claims; ``{condition: {"ok": bool, ...details}}``."""
    vlm, layers, tolerance = setup.vlm, setup.vlm.lm_num_layers, _tolerance(setup.vlm.dtype)
    checks: dict[str, dict[str, Any]] = {}
    reference = run_baseline(setup).logits

    logits = run_baseline_eager(setup).logits
    diff = _max_diff(logits, reference)
    checks["baseline_eager"] = {"ok": diff <= tolerance * 10, "max_abs_logit_diff_vs_baseline": diff}
    checks["baseline"] = {"ok": bool(torch.isfinite(reference).all()), "logits_shape": list(reference.shape)}

    output = run_a(setup)
    hidden = output.hidden_states or ()
    checks["A"] = {
        "ok": len(hidden) == layers + 1 and _max_diff(output.logits, reference) == 0.0,
        "hidden_states": len(hidden),
    }

    output = run_b(setup)
    cache = dict(vlm.cache)
    expected = {
        f"lm.blocks.{i}.{name}" for i in range(layers) for name in ("hook_resid_pre", "hook_resid_post")
    }
    checks["B"] = {
        "ok": set(cache) == expected and _max_diff(output.logits, reference) == 0.0,
        "cached": len(cache),
        "max_abs_logit_diff_vs_baseline": _max_diff(output.logits, reference),
    }

    output = run_c(setup)
    attentions = output.attentions or ()
    weights_ok = len(attentions) == layers and all(a is not None and a.dim() == 4 for a in attentions)
    checks["C"] = {"ok": weights_ok, "attentions": len(attentions)}

    output = run_d(setup)
    patterns = [vlm.cache.get(f"lm.blocks.{i}.attn.hook_pattern") for i in range(layers)]
    d_ok = all(p is not None for p in patterns)
    diff = (
        max(_max_diff(p, a) for p, a in zip(patterns, attentions, strict=True))
        if d_ok and weights_ok
        else None
    )
    checks["D"] = {
        "ok": d_ok and diff is not None and diff <= tolerance and _max_diff(output.logits, reference) == 0.0,
        "max_abs_diff_vs_C_attentions": diff,
    }

    checks["E"] = _verify_e(setup, reference, tolerance)
    checks["F"] = _verify_f(setup, reference)
    return checks


def _verify_e(setup: Setup, reference: torch.Tensor, tolerance: float) -> dict[str, Any]:
    vlm, layers = setup.vlm, setup.vlm.lm_num_layers
    with vlm.run_with_cache("lm.blocks.0.hook_resid_post"):
        vlm.forward(setup.inputs)
    clean = vlm.cache["lm.blocks.0.hook_resid_post"]
    identity = dataclasses.replace(setup, patch_delta=0.0, calls=[])
    identity_diff = _max_diff(run_e(identity).logits, reference)
    shifted = dataclasses.replace(setup, patch_delta=1.0, calls=[])
    # The cache hook registers after the patch, so it reads what the patch wrote back.
    patch = [("lm.blocks.*.hook_resid_post", _shift_resid(shifted))]
    with vlm.run_with_hooks(patch), vlm.run_with_cache("lm.blocks.0.hook_resid_post"):
        logits = vlm.forward(setup.inputs).logits
    patched = vlm.cache["lm.blocks.0.hook_resid_post"]
    replaced = bool(torch.equal(patched, clean + 1.0))
    shifted_diff = _max_diff(logits, reference)
    return {
        "ok": identity_diff == 0.0
        and replaced
        and shifted_diff > tolerance
        and len(identity.calls) == layers
        and len(shifted.calls) == layers,
        "identity_patch_max_abs_logit_diff": identity_diff,
        "delta_1_replaced_layer_0_output": replaced,
        "delta_1_max_abs_logit_diff": shifted_diff,
        "hook_calls_per_forward": len(identity.calls),
    }


def _verify_f(setup: Setup, reference: torch.Tensor) -> dict[str, Any]:
    vlm, layers = setup.vlm, setup.vlm.lm_num_layers
    counted = dataclasses.replace(setup, calls=[])
    patch = [("lm.blocks.*.attn.hook_z", _zero_head(counted))]
    with vlm.run_with_hooks(patch), vlm.run_with_cache("lm.blocks.*.attn.hook_z"):
        logits = vlm.forward(setup.inputs).logits
    z = [vlm.cache[f"lm.blocks.{i}.attn.hook_z"] for i in range(layers)]
    zeroed = all(bool((value[:, :, setup.head] == 0).all()) for value in z)
    others_live = all(bool(value.abs().sum() > 0) for value in z)
    diff = _max_diff(logits, reference)
    timed_diff = _max_diff(run_f(setup).logits, reference)
    return {
        "ok": zeroed and others_live and diff > 0 and timed_diff == diff and len(counted.calls) == layers,
        "head": setup.head,
        "head_zero_in_every_layer": zeroed,
        "max_abs_logit_diff": diff,
        "hook_calls_per_forward": len(counted.calls),
    }


# --------------------------------------------------------------------------------------------- output
def print_table(result: dict[str, Any]) -> None:
    model, medians, memory = result["model"], result["timing"]["median_s"], result.get("memory", {})
    print(
        f"\n{model['model']} ({model['model_class']}): {model['layers']} layers, hidden {model['hidden']}, "
        f"{model['heads']} heads / {model['kv_heads']} kv, {model['tokens']} tokens "
        f"({model['image_tokens']} image), {model['dtype']} on {model['device']}, "
        f"attention {model['attn_implementation']}; {result['machine']['torch_threads']} torch threads"
    )
    print(f"runtime: {model['runtime']}")
    timing = result["timing"]
    columns = (
        f"{'condition':<24}{'wall ms':>9}{'x Base':>8}{'min ms':>9}{'x Base':>8}{'cpu ms':>9}{'x Base':>8}"
        f"{'RSS +MiB':>10}{'torch MiB':>11}{'CUDA MiB':>10}  what"
    )
    print(columns)
    for key in medians:
        condition, measured = CONDITIONS[key], memory.get(key, {})
        cells = ""
        for values in (timing["median_s"], timing["min_s"], timing["cpu_median_s"]):
            baseline = values.get("baseline")
            ratio = f"{values[key] / baseline:8.2f}" if baseline else f"{'':>8}"
            cells += f"{values[key] * 1e3:>9.1f}{ratio}"
        print(
            f"{condition.label:<24}{cells}"
            f"{_fmt(measured.get('rss_peak_increase_mib'), 10)}"
            f"{_fmt(measured.get('torch_alloc_peak_mib'), 11)}"
            f"{_fmt(measured.get('cuda_peak_mib'), 10)}  {condition.what}"
        )
    errors = {key: value["error"] for key, value in memory.items() if "error" in value}
    for key, error in errors.items():
        print(f"memory of {key} failed: {error}")
    print("ratios (wall medians): " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))
    print("ratios (cpu medians):  " + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ratios"].items()))
    print("ratios (wall minima):  " + ", ".join(f"{k} {v:.2f}" for k, v in result["min_ratios"].items()))
    if result.get("memory_ratios"):
        print(
            "ratios (peak memory): " + ", ".join(f"{k} {v:.2f}" for k, v in result["memory_ratios"].items())
        )
    methods = {value.get("method") for value in memory.values() if value.get("method")}
    for method in sorted(methods):
        print(f"memory method: {method}")
    if any(value.get("torch_alloc_method") for value in memory.values()):
        print(f"torch MiB: {TORCH_ALLOC_METHOD}")
    failed = [key for key, check in result.get("checks", {}).items() if not check["ok"]]
    print("self-check: " + ("all conditions verified" if not failed else f"FAILED for {', '.join(failed)}"))


def _fmt(value: float | None, width: int) -> str:
    return f"{value:>{width}.1f}" if isinstance(value, int | float) else f"{'-':>{width}}"


def _select(spec: str, option: str) -> list[str]:
    if spec == "all":
        return list(CONDITIONS)
    if spec == "none":
        return []
    keys = [key.strip() for key in spec.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CONDITIONS]
    if unknown:
        raise SystemExit(f"{option}: unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    return keys


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--family", default="qwen2_5_vl", help="tiny family or stored checkpoint id to scale up"
    )
    model.add_argument(
        "--checkpoint", help="benchmark a real checkpoint (alias, hub id in the cache, local dir)"
    )
    model.add_argument("--layers", type=int, default=8, help="decoder layers of the scaled tiny model")
    model.add_argument("--hidden", type=int, default=512, help="decoder width of the scaled tiny model")
    model.add_argument(
        "--heads",
        type=int,
        default=8,
        help="decoder query-head budget (head_dim <= hidden / heads; the family's GQA rules may change it)",
    )
    model.add_argument("--encoder-hidden", type=int, default=32, help="vision encoder width (tiny)")
    model.add_argument("--encoder-layers", type=int, default=2, help="vision encoder depth (tiny)")
    model.add_argument(
        "--target-tokens", type=int, default=1000, help="minimum sequence length, image included"
    )
    model.add_argument(
        "--dtype", choices=sorted(DTYPES), help="default: float32 tiny, runtime default checkpoint"
    )
    model.add_argument("--device", help="default: cpu for tiny models, auto for checkpoints")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--head", type=int, default=0, help="the head condition F zeroes")
    run = parser.add_argument_group("run")
    run.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    run.add_argument("--repeats", type=int, default=10, help="interleaved timed rounds")
    run.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing")
    run.add_argument("--conditions", default="all", help="comma-separated condition keys, or all")
    run.add_argument(
        "--memory", default="all", help="conditions whose peak memory is measured: all, none, keys"
    )
    run.add_argument("--no-check", action="store_true", help="skip the self-check of the conditions")
    run.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    parser.add_argument("--measure-memory", metavar="CONDITION", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory is not None and args.measure_memory not in CONDITIONS:
        parser.error(f"unknown condition {args.measure_memory!r}")
    if args.hidden % args.heads:
        parser.error("--hidden must be a multiple of --heads")
    return args


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark (self-check, timing, memory) as the JSON-ready result."""
    keys = _select(args.conditions, "--conditions")
    setup = build_setup(args)
    conditions = [CONDITIONS[key] for key in keys]
    result: dict[str, Any] = {
        "machine": machine(),
        "model": setup.description,
        "conditions": {c.key: {"label": c.label, "what": c.what} for c in conditions},
    }
    if not args.no_check:
        result["checks"] = verify(setup)
    samples, cpu_samples = time_conditions(setup, conditions, args.repeats, args.warmup)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    cpu_medians = {key: statistics.median(values) for key, values in cpu_samples.items()}
    result["timing"] = {
        "method": "medians of interleaved rounds (order rotated per round) after warm-up; wall: perf_counter"
        + (" with cuda synchronize" if setup.device.type == "cuda" else "")
        + "; cpu: process_time (all threads; less sensitive to other load on a shared machine)",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "median_s": medians,
        "samples_s": samples,
        "cpu_median_s": cpu_medians,
        "cpu_samples_s": cpu_samples,
    }
    result["timing"]["min_s"] = {key: min(values) for key, values in samples.items()}
    result["ratios"] = ratios_from(medians)
    result["cpu_ratios"] = ratios_from(cpu_medians)
    # Best-of-N: on a shared machine other load only ever adds time, so minima are the least disturbed.
    result["min_ratios"] = ratios_from(result["timing"]["min_s"])
    memory: dict[str, Any] = {}
    for key in _select(args.memory, "--memory"):
        if setup.device.type == "cuda":
            memory[key] = measure_memory_here(setup, CONDITIONS[key])
        else:
            memory[key] = measure_memory_in_subprocess(args, key)
    result["memory"] = memory
    field = "cuda_peak_mib" if setup.device.type == "cuda" else "torch_alloc_peak_mib"
    result["memory_ratios"] = ratios_from({k: v.get(field) for k, v in memory.items()})
    result["memory_ratios_field"] = field
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.measure_memory is not None:
        setup = build_setup(args)
        measured = measure_memory_here(setup, CONDITIONS[args.measure_memory])
        print(
            json.dumps({"condition": args.measure_memory, "tokens": setup.description["tokens"], **measured})
        )
        return measured
    result = run_benchmark(args)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
