"""Runtime benchmark: tiny-model build + forward per family, and the cost of caching.

    python benchmarks/bench_runtime.py [--repeats 20]

Prints, per seed family: build time, forward time, and the ratio of a forward under
``run_with_cache(all hook_resid_post)`` to a plain forward (median of ``--repeats`` runs), plus
each family module's size in lines. Ratios, not absolute times, are the comparable numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vlmforge import HookedVLM, ModelRegistry
from vlmforge.harness.probes import probe_image


def _interleaved_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two functions, alternating them so machine load drifts hit both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((first, samples[0]), (second, samples[1])):
            started = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - started)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'family':<12}{'build s':>9}{'forward ms':>12}{'cached ms':>11}{'ratio':>8}{'module lines':>14}")
    for name, adapter in sorted(ModelRegistry.adapters().items()):
        started = time.perf_counter()
        vlm = HookedVLM.from_pretrained(f"tiny/{name}", device="cpu")
        build = time.perf_counter() - started
        inputs = vlm.prepare_messages("Describe the image.", probe_image(56, 56))
        vlm.forward(inputs)  # warm-up

        def plain(vlm=vlm, inputs=inputs):
            vlm.forward(inputs)

        def cached(vlm=vlm, inputs=inputs):
            with vlm.run_with_cache("lm.blocks.*.hook_resid_post"):
                vlm.forward(inputs)

        plain_s, cached_s = _interleaved_medians(plain, cached, args.repeats)
        module = Path(__import__(adapter.__module__, fromlist=["_"]).__file__)
        lines = len(module.read_text().splitlines())
        ratio = cached_s / plain_s
        print(f"{name:<12}{build:>9.2f}{plain_s * 1e3:>12.2f}{cached_s * 1e3:>11.2f}{ratio:>8.2f}{lines:>14}")


if __name__ == "__main__":
    main()
