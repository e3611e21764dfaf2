"""The pytest plugin as a user runs it: options, usage errors, skips, matrix and report files."""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter

import pytest
import torch

from tests.conftest import tiny_vlm
from vlmforge import HookedVLM
from vlmforge.core.versions import TRANSFORMERS_VERSION
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.mutants import run_checks

SUITE = ["--pyargs", "vlmforge.harness.suite.test_conformance", "-p", "no:cacheprovider"]


def test_unknown_model_is_a_usage_error_listing_aliases(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess(*SUITE, "--model", "no-such-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--model no-such-model: unknown model*llava-7b*tiny/qwen3_vl*"])


def test_non_vlm_checkpoint_is_skipped_at_collection(pytester: pytest.Pytester, tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    result = pytester.runpytest_subprocess(*SUITE, "--model", str(tmp_path), "-rs")
    result.stdout.fnmatch_lines(["*SKIPPED*not a supported image+text VLM*'llama'*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # no silent green: nothing was tested
    result.stdout.fnmatch_lines(["*no conformance check ran*"])


def test_model_run_writes_matrix_and_report(pytester: pytest.Pytester, tmp_path):
    report = tmp_path / "conformance"
    result = pytester.runpytest_subprocess(
        *SUITE,
        "--model",
        "smolvlm-256m",
        "--tiny",
        "--conformance-report",
        str(report),
        "-k",
        "contract or capability or attention_vs_eager",
    )
    result.stdout.fnmatch_lines(
        [
            "vlmforge models under test: tiny/smolvlm",
            "*vlmforge conformance matrix*",
            "capability_contiguous_image_tokens*pass*",
            "attention_vs_eager *pass 0.0e+00*",
        ]
    )
    assert result.ret == pytest.ExitCode.OK
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["tiny/smolvlm"]["attention_vs_eager"]["outcome"] == "passed"
    assert "| attention_vs_eager |" in report.with_suffix(".md").read_text()


def test_failing_adapter_module_shows_in_matrix_with_difference(pytester: pytest.Pytester, tmp_path):
    """A broken third-party family loaded with --adapter-module fails in the right check, with numbers."""
    module = tmp_path / "broken_llava.py"
    module.write_text(
        "from vlmforge.adapters.llava import SPEC\n"
        "from vlmforge.core import AttentionRecipe, ModelAdapter, ModelRegistry\n"
        "BROKEN = SPEC.replace(name='broken_llava', checkpoints=('me/broken-llava',), aliases={},\n"
        "                      model_types=('broken_llava',), tiny_reference='llava-hf/llava-1.5-7b-hf',\n"
        "                      attention=AttentionRecipe(rotary_function=None))\n"
        "@ModelRegistry.register('broken_llava')\n"
        "class BrokenLlava(ModelAdapter):\n"
        "    spec = BROKEN\n"
    )
    result = pytester.runpytest_subprocess(
        *SUITE,
        "--adapter-module",
        str(module),
        "--model",
        "tiny/broken_llava",
        "-k",
        "attention_vs_eager or shapes",
    )
    result.stdout.fnmatch_lines(
        [
            "attention_vs_eager *FAIL*e-0*",
            "FAIL tiny/broken_llava / attention_vs_eager: *layer 0, batch 0, head * query * key *max |diff|*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_every_registered_check_is_collected_once_per_model(pytester: pytest.Pytester):
    models = ["tiny/llava", "tiny/qwen3_vl"]
    result = pytester.runpytest_subprocess(*SUITE, *(f"--model={m}" for m in models), "--collect-only", "-q")
    ids = [match[1] for line in result.outlines if (match := re.search(r"::test_check\[(.+)\]$", line))]
    collected = Counter(tuple(test_id.rsplit("-", 1)) for test_id in ids)  # check names have no "-"
    assert collected == Counter({(model, name): 1 for model in models for name in CHECKS})


THIRD_PARTY_CONFTEST = """
    from vlmforge.harness.checks import CheckResult, check

    @check
    def third_party_has_layers(vlm):
        \"\"\"The decoder has at least one layer.\"\"\"
        assert vlm.lm_num_layers > 0
        return CheckResult(0.0, f"{vlm.lm_num_layers} layers")

    def _llava_is_out_of_scope(vlm):
        return "out of scope for llava" if vlm.adapter.spec.name == "llava" else None

    @check(not_applicable=_llava_is_out_of_scope)
    def third_party_not_for_llava(vlm):
        \"\"\"Passes wherever it applies.\"\"\"
        return CheckResult()
"""


def test_third_party_check_in_a_conftest_runs_for_every_model(pytester: pytest.Pytester, tmp_path):
    """A check registered in a conftest gets a matrix row; where it does not apply, the reason shows."""
    pytester.makeconftest(textwrap.dedent(THIRD_PARTY_CONFTEST))
    report = tmp_path / "conformance"
    models = ("--model", "tiny/llava", "--model", "tiny/smolvlm")
    result = pytester.runpytest_subprocess(
        *SUITE, *models, "--conformance-report", str(report), "-k", "third_party"
    )
    reason = "not applicable: out of scope for llava"
    result.stdout.fnmatch_lines(
        [
            "third_party_has_layers *pass 0.0e+00 *pass 0.0e+00*",
            "third_party_not_for_llava *skip *pass*",
            f"SKIP tiny/llava / third_party_not_for_llava: *{reason}",
        ]
    )
    assert result.ret == pytest.ExitCode.OK
    cell = json.loads(report.with_suffix(".json").read_text())["tiny/llava"]["third_party_not_for_llava"]
    assert cell["outcome"] == "skipped" and reason in cell["message"]
    assert f"- `tiny/llava` / `third_party_not_for_llava`: Skipped: {reason}" in (
        report.with_suffix(".md").read_text()
    )


def test_works_under_xdist(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess(
        *SUITE, "-n", "2", "--model", "tiny/llava", "-k", "shapes or finite"
    )
    result.stdout.fnmatch_lines(["*vlmforge conformance matrix*", "contract_shapes *pass*"])
    assert result.ret == pytest.ExitCode.OK


def test_adapter_missing_a_method_fails_only_that_check():
    base = tiny_vlm("llava")
    incomplete = type("Incomplete", (type(base.adapter),), {"get_lm_up_proj": None})
    vlm = HookedVLM(base.model, base.prompt_processor, adapter=incomplete(base.model))
    results = run_checks(vlm)
    assert "get_lm_up_proj" in results["contract_accessors"]
    assert results["attention_vs_eager"] == "pass" and results["capability_supports_batching"] == "pass"


def test_nan_model_gets_its_own_clear_failure():
    from vlmforge.tiny import build_tiny_model

    tiny = build_tiny_model("llava-hf/llava-1.5-7b-hf")
    with torch.no_grad():
        tiny.model.lm_head.weight[3] = float("nan")
    vlm = HookedVLM(tiny.model, tiny.processor)
    with pytest.raises(AssertionError, match=r"non-finite logits \(NaN/Inf\)"):
        CHECKS["outputs_finite"].function(vlm)


def test_suite_runs_on_a_local_checkpoint_directory(pytester: pytest.Pytester, tmp_path):
    """The real-checkpoint path (from_pretrained on a directory), offline: a saved tiny Qwen3-VL."""
    built = tiny_vlm("qwen3_vl")
    checkpoint = tmp_path / "my-qwen3-vl-finetune"
    built.model.save_pretrained(checkpoint)
    built.processor.save_pretrained(checkpoint)
    result = pytester.runpytest_subprocess(
        *SUITE, "--model", str(checkpoint), "-k", "capability or attention_vs_eager or logit_lens"
    )
    result.stdout.fnmatch_lines(
        [f"vlmforge models under test: {checkpoint}", "capability_strict_residual_stream *pass*"]
    )
    assert result.ret == pytest.ExitCode.OK


SIMULATED_BROKEN_RELEASE = """
from vlmforge.core.versions import BROKEN_FORWARDS, TRANSFORMERS_VERSION, BrokenForward

# llama4's forward declared broken on the running release (the real fact covers 5.24 only).
BROKEN_FORWARDS["Llama4ForConditionalGeneration"] = BrokenForward(
    releases=(TRANSFORMERS_VERSION,), defect="simulated defect D", works_on="9.99"
)
"""


@pytest.mark.parametrize("selection", [["--model", "tiny/llama4"], ["--all-models", "-k", "llama4"]])
def test_a_family_the_release_cannot_run_is_skipped_with_the_reason(pytester: pytest.Pytester, selection):
    """Every cell says why (never dropped silently), and the session is not failed for it."""
    pytester.makepyfile(simulate_broken_release=SIMULATED_BROKEN_RELEASE)
    release = ".".join(map(str, TRANSFORMERS_VERSION))
    result = pytester.runpytest_subprocess(*SUITE, "-p", "simulate_broken_release", *selection, "-rs")
    result.stdout.fnmatch_lines(
        [
            "vlmforge models under test: *tiny/llama4*",
            f"*SKIPPED*not applicable on transformers {release}: simulated defect D; it runs on*9.99*",
        ]
    )
    assert "no conformance check ran" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert outcomes["skipped"] >= len(CHECKS) and "passed" not in outcomes and "failed" not in outcomes
