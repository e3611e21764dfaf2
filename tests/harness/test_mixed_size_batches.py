"""``FamilySpec.batches_mixed_image_sizes``: measured on the processor, declared by research, held by a
check, and the reason mixed-size batch checks do not apply (PerceptionLM's per-image tile counts)."""

from __future__ import annotations

import importlib.util
import textwrap
import types

import pytest

from tests.conftest import tiny_vlm
from vlmforge.core.errors import InputError
from vlmforge.harness.checks.capabilities import mixed_size_batches_refused
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.measure import measure_mixed_size_batches
from vlmforge.harness.probes import MIXED_SIZES, PROBE_SIZES, probe_batch, probe_image, vlm_probe_batch

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="PerceptionLM needs timm")


class _StackingProcessor:
    """A prompt processor stand-in that, like an HF processor returning tensors, stacks per-image
    outputs: it refuses a batch whose images give different shapes (``shape_of(image)``)."""

    def __init__(self, shape_of) -> None:
        self.shape_of = shape_of
        self.batches: list[list[tuple[int, int]]] = []

    def prepare_inputs(self, task, image):
        return self.prepare_inputs_batch([task], [image])

    def prepare_inputs_batch(self, tasks, images):
        self.batches.append([image.size for image in images])
        shapes = {self.shape_of(image) for image in images}
        if len(shapes) > 1:
            error = RuntimeError(f"stack expects each tensor to be equal size, got {sorted(shapes)}")
            raise InputError("the processor rejected the input") from error
        return {}


def _fake_vlm(shape_of) -> types.SimpleNamespace:
    return types.SimpleNamespace(prompt_processor=_StackingProcessor(shape_of))


def test_probe_batch_has_one_image_size_where_mixed_sizes_are_denied():
    _, mixed = probe_batch(3)
    _, uniform = probe_batch(3, mixed_sizes=False)
    assert [image.size for image in mixed] == list(PROBE_SIZES)
    assert {image.size for image in uniform} == {PROBE_SIZES[0]}
    assert len({image.tobytes() for image in uniform}) == 3  # still different images
    spec = types.SimpleNamespace(batches_mixed_image_sizes=False)
    vlm = types.SimpleNamespace(adapter=types.SimpleNamespace(spec=spec))
    assert {image.size for image in vlm_probe_batch(vlm, 2)[1]} == {PROBE_SIZES[0]}


def test_mixed_sizes_span_every_whole_aspect_ratio_of_the_property_range():
    # A tile grid is chosen by aspect ratio: a measurement on square images only would miss it.
    ratios = {max(w, h) // min(w, h) for w, h in MIXED_SIZES if max(w, h) % min(w, h) == 0}
    assert ratios == set(range(1, 8))
    assert all(16 <= side <= 112 for size in MIXED_SIZES for side in size)


def test_measure_accepts_a_processor_that_stacks_any_size():
    vlm = _fake_vlm(lambda image: (3, 56, 56))  # everything resized to one shape
    measurement = measure_mixed_size_batches(vlm)
    assert measurement.value is True
    assert vlm.prompt_processor.batches[-1] == list(MIXED_SIZES)  # one batch of every size


def test_measure_finds_an_aspect_ratio_dependent_tile_count():
    # Tiles like PerceptionLM: a thumbnail plus a 2x2 grid for near-square images, 1x2 for 1:2 ones.
    vlm = _fake_vlm(lambda image: 3 if max(image.size) == 2 * min(image.size) else 5)
    measurement = measure_mixed_size_batches(vlm)
    assert measurement.value is False
    assert "each accepted alone, refused in one batch (stack expects each tensor" in measurement.evidence
    assert mixed_size_batches_refused(vlm).startswith("the processor cannot batch images of different sizes")


def test_measure_lets_a_single_image_refusal_propagate():
    # A processor refusing one image alone is broken, not unable to batch: no False measurement.
    def shape_of(image):
        if image.size == (16, 16):
            raise InputError("this processor refuses 16 px images")
        return (3, 56, 56)

    processor = _StackingProcessor(shape_of)

    def prepare_inputs(task, image):
        shape_of(image)

    processor.prepare_inputs = prepare_inputs
    with pytest.raises(InputError, match="refuses 16 px"):
        measure_mixed_size_batches(types.SimpleNamespace(prompt_processor=processor))


def test_declared_flag_is_held_to_the_measurement():
    from vlmforge.harness.checks.capabilities import processor_mixed_size_batches
    from vlmforge.harness.mutants import with_spec

    llava = tiny_vlm("llava")
    assert processor_mixed_size_batches(llava).detail.startswith("declared == measured == True")
    assert mixed_size_batches_refused(llava) is None
    wrong = with_spec(batches_mixed_image_sizes=False)(type(llava.adapter))
    mutant = types.SimpleNamespace(adapter=wrong(llava.model), prompt_processor=llava.prompt_processor)
    with pytest.raises(CheckFailure, match="declared False but measured True"):
        processor_mixed_size_batches(mutant)


@needs_timm
def test_perception_lm_tiles_do_not_stack_and_the_error_says_so():
    vlm = tiny_vlm("perception_lm")
    assert vlm.adapter.spec.batches_mixed_image_sizes is False
    assert measure_mixed_size_batches(vlm).value is False
    # 1:1 and 1:2 images: a thumbnail plus 2x2 tiles vs plus 1x2 tiles.
    square, tall = probe_image(16, 16), probe_image(16, 32, seed=1)
    with pytest.raises(InputError, match="declares batches_mixed_image_sizes=False: batch images of one"):
        vlm.prepare_messages_batch(["a", "b"], [square, tall])
    batch = vlm.prepare_messages_batch(["a", "b"], [tall, probe_image(16, 32, seed=2)])
    assert batch["pixel_values"].shape[:2] == (2, 3)


@needs_timm
def test_research_declares_what_it_measures_on_perception_lm():
    from vlmforge.scaffold.research import research

    report = research("facebook/Perception-LM-1B", name="perception_lm")
    answer = report["batches_mixed_image_sizes"]
    assert answer.value is False and answer.status == "measured"
    assert report.spec_kwargs()["batches_mixed_image_sizes"] is False
    assert report["supports_batching"].value is True  # measured on a batch of one image size


MARKED_TEST = """
    import pytest

    def _not_for_llava(vlm):
        return "llava has no such thing" if vlm.adapter.spec.name == "llava" else None

    @pytest.mark.not_applicable.with_args(_not_for_llava)
    def test_marked(vlm):
        assert vlm.adapter.spec.name != "llava"
"""


def test_not_applicable_marker_skips_with_the_reason_where_it_applies(pytester: pytest.Pytester):
    pytester.makepyfile(textwrap.dedent(MARKED_TEST))
    result = pytester.runpytest_subprocess(
        "--model", "tiny/llava", "--model", "tiny/paligemma", "-rs", "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(["*SKIPPED*not applicable: llava has no such thing*"])
    result.assert_outcomes(passed=1, skipped=1)
