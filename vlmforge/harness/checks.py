"""The conformance checks. Each one proves one part of an adapter right, or fails saying where.

A check takes a :class:`HookedVLM`, returns a :class:`CheckResult` (the measured difference and a
one-line detail) and raises :class:`CheckFailure` when the adapter is wrong. The pytest suite wraps
each check in its own test so the conformance matrix shows exactly which one failed; the checks
never assume tiny dimensions, so the same code runs on real checkpoints in bf16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from vlmforge.core.adapter import causal_mask
from vlmforge.core.hooks import HOOK_TYPES
from vlmforge.core.runtime import HookedVLM
from vlmforge.core.spec import CAPABILITY_NAMES
from vlmforge.harness.compare import CheckFailure, assert_close, max_abs_difference
from vlmforge.harness.measure import (
    Measurement,
    measure_batching,
    measure_contiguous_image_tokens,
    measure_strict_residual_stream,
)
from vlmforge.harness.probes import (
    PROBE_PROMPTS,
    language_model_inputs_embeds,
    probe_batch,
    probe_image,
    run_eager_with_attention_inputs,
)
from vlmforge.harness.tolerances import scaled, tolerance_for

PATTERN_AXES = ("batch", "head", "query", "key")
STATE_AXES = ("batch", "position", "dim")


@dataclass(frozen=True)
class CheckResult:
    """A passed check: the measured max-abs difference (if numeric) and a short detail."""

    max_diff: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    function: Callable[[HookedVLM], CheckResult]
    summary: str


CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Callable[[HookedVLM], CheckResult]], Callable[[HookedVLM], CheckResult]]:
    """Register a check function under ``name`` (its docstring's first line is the summary)."""

    def decorator(function: Callable[[HookedVLM], CheckResult]) -> Callable[[HookedVLM], CheckResult]:
        # Checks only read the model: no autograd graph, whatever modules they call directly.
        checked = torch.no_grad()(function)
        CHECKS[name] = Check(name, checked, (function.__doc__ or "").strip().splitlines()[0])
        return checked

    return decorator


def single_probe(vlm: HookedVLM):
    return vlm.prepare_messages(PROBE_PROMPTS[1], probe_image(56, 56))


# ------------------------------------------------------------------ contract
LAYER_ACCESSORS = (
    "get_lm_layer",
    "get_lm_attn",
    "get_lm_o_proj",
    "get_lm_mlp",
    "get_lm_q_proj",
    "get_lm_k_proj",
    "get_lm_v_proj",
    "get_lm_gate_proj",
    "get_lm_up_proj",
    "get_lm_down_proj",
)
MODEL_ACCESSORS = ("get_lm_norm", "get_lm_head")
PROPERTIES = (
    "lm_layers",
    "lm_attn",
    "lm_o_proj",
    "lm_mlp",
    "lm_num_layers",
    "lm_num_heads",
    "lm_num_kv_heads",
    "lm_hidden_dim",
    "lm_head_dim",
    "lm_mlp_dim",
    "has_strict_residual_stream",
)
METHODS = (
    "compute_attention_scores",
    "compute_attention_patterns",
    "compute_per_head_contributions",
    "get_image_token_id",
    "format_cache_item",
)


@check("contract_accessors")
def check_contract_accessors(vlm: HookedVLM) -> CheckResult:
    """Every method and property of the adapter contract exists and resolves."""
    adapter = vlm.adapter
    problems: list[str] = []

    def present(name: str) -> bool:
        member = getattr(type(adapter), name, None)
        return isinstance(member, property) if name in PROPERTIES else callable(member)

    problems += [
        f"{name}: missing from {type(adapter).__name__}"
        for name in (*LAYER_ACCESSORS, *MODEL_ACCESSORS, *PROPERTIES, *METHODS)
        if not present(name)
    ]
    for name in PROPERTIES:
        if present(name):
            try:
                getattr(adapter, name)
            except Exception as error:
                problems.append(f"{name}: {type(error).__name__}: {error}")
    for name in (*LAYER_ACCESSORS, *MODEL_ACCESSORS):
        if present(name):
            try:
                module = getattr(adapter, name)(0) if name in LAYER_ACCESSORS else getattr(adapter, name)()
                if not isinstance(module, torch.nn.Module):
                    problems.append(f"{name} returned {type(module).__name__}, not an nn.Module")
            except Exception as error:
                problems.append(f"{name}: {type(error).__name__}: {error}")
    if problems:
        raise CheckFailure(
            "adapter contract incomplete: " + "; ".join(problems), hint="the family spec's paths"
        )
    return CheckResult(
        detail=f"{len(LAYER_ACCESSORS + MODEL_ACCESSORS + PROPERTIES + METHODS)} members resolve"
    )


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    weight = module.weight
    return int(weight.shape[1]), int(weight.shape[0])


@check("contract_shapes")
def check_contract_shapes(vlm: HookedVLM) -> CheckResult:
    """Module shapes agree with the declared dimensions (heads, kv heads, head_dim, mlp, layers)."""
    a = vlm.adapter
    hidden, heads, kv, head_dim, mlp = (
        a.lm_hidden_dim,
        a.lm_num_heads,
        a.lm_num_kv_heads,
        a.lm_head_dim,
        a.lm_mlp_dim,
    )
    problems: list[str] = []
    if a.lm_num_layers != len(a.lm_layers):
        problems.append(f"lm_num_layers={a.lm_num_layers} but the decoder has {len(a.lm_layers)} layers")
    expected = {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv * head_dim),
        "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, mlp),
        "up_proj": (hidden, mlp),
        "down_proj": (mlp, hidden),
    }
    for layer in range(len(a.lm_layers)):
        for name, (want_in, want_out) in expected.items():
            if name in ("gate_proj", "up_proj", "down_proj") and getattr(a.spec.modules, name) is None:
                continue
            got = _in_out(getattr(a, f"get_lm_{name}")(layer))
            if got != (want_in, want_out):
                problems.append(f"layer {layer} {name}: in/out {got}, expected {(want_in, want_out)}")
    head_in = a.get_lm_head().weight.shape[1]
    if head_in != hidden:
        problems.append(f"lm_head input {head_in} != lm_hidden_dim {hidden}")
    if problems:
        raise CheckFailure(
            "module shapes disagree with declared dims: " + "; ".join(problems[:5]),
            hint="lm_head_dim (explicit head_dim in the config?), lm_num_kv_heads, the layer path",
        )
    return CheckResult(
        detail=f"H={heads} H_kv={kv} d_h={head_dim} D={hidden} F={mlp} layers={len(a.lm_layers)}"
    )


@check("hook_shapes")
def check_hook_shapes(vlm: HookedVLM) -> CheckResult:
    """Every hook type caches a tensor of the documented shape on every layer."""
    a = vlm.adapter
    inputs = single_probe(vlm)
    batch, length = inputs["input_ids"].shape
    hidden, heads, kv, head_dim, mlp = (
        a.lm_hidden_dim,
        a.lm_num_heads,
        a.lm_num_kv_heads,
        a.lm_head_dim,
        a.lm_mlp_dim,
    )
    expected = {
        "hook_resid_pre": (batch, length, hidden),
        "hook_resid_post": (batch, length, hidden),
        "attn.hook_in": (batch, length, hidden),
        "attn.hook_q": (batch, length, heads, head_dim),
        "attn.hook_k": (batch, length, kv, head_dim),
        "attn.hook_v": (batch, length, kv, head_dim),
        "attn.hook_scores": (batch, heads, length, length),
        "attn.hook_pattern": (batch, heads, length, length),
        "attn.hook_z": (batch, length, heads, head_dim),
        "attn.hook_head_out": (batch, length, heads, hidden),
        "attn.hook_out": (batch, length, hidden),
        "mlp.hook_in": (batch, length, hidden),
        "mlp.hook_pre": (batch, length, mlp),
        "mlp.hook_pre_linear": (batch, length, mlp),
        "mlp.hook_post": (batch, length, mlp),
        "mlp.hook_out": (batch, length, hidden),
    }
    assert set(expected) == set(HOOK_TYPES), "hook table and check out of sync"
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in expected]):
        vlm.forward(inputs)
    problems = [
        f"{name}: {tuple(vlm.cache[name].shape) if name in vlm.cache else 'not cached'}, expected {shape}"
        for layer in range(vlm.lm_num_layers)
        for hook, shape in expected.items()
        if (name := f"lm.blocks.{layer}.{hook}") not in vlm.cache or tuple(vlm.cache[name].shape) != shape
    ]
    if problems:
        raise CheckFailure(
            "hook shapes wrong: " + "; ".join(problems[:5]), hint="format_cache_item / module paths"
        )
    return CheckResult(detail=f"{len(expected)} hook types x {vlm.lm_num_layers} layers")


# -------------------------------------------------------------- image tokens
@check("image_token_in_vocab")
def check_image_token_in_vocab(vlm: HookedVLM) -> CheckResult:
    """``get_image_token_id()`` is a token of the tokenizer and a row of the embedding."""
    token_id = vlm.adapter.get_image_token_id()
    tokenizer = vlm.prompt_processor.tokenizer
    vocab = len(tokenizer)
    rows = vlm.adapter.language_model.get_input_embeddings().weight.shape[0]
    if not 0 <= token_id < min(vocab, rows):
        raise CheckFailure(
            f"image token id {token_id} outside the vocabulary ({vocab} tokens, {rows} embedding rows)",
            hint="get_image_token_id() / the spec's image_token source",
        )
    return CheckResult(detail=f"id {token_id} = {tokenizer.convert_ids_to_tokens(token_id)!r}")


@check("image_token_count")
def check_image_token_count(vlm: HookedVLM) -> CheckResult:
    """Image features land exactly on the image-token positions (count and place)."""
    inputs = single_probe(vlm)
    token_id = vlm.adapter.get_image_token_id()
    ids = inputs["input_ids"]
    is_image = ids == token_id
    if not is_image.any():
        raise CheckFailure(
            f"processed inputs contain no image token (id {token_id})",
            hint="get_image_token_id() and the processor's image placeholder",
        )
    merged = language_model_inputs_embeds(vlm, inputs)
    text = vlm.adapter.language_model.get_input_embeddings()(ids)
    replaced = (merged != text).any(dim=-1)
    if not torch.equal(replaced, is_image):
        missing = int((is_image & ~replaced).sum())
        extra = int((replaced & ~is_image).sum())
        raise CheckFailure(
            f"{int(is_image.sum())} tokens have id {token_id} but the vision tower's "
            f"{int(replaced.sum())} features replaced other positions "
            f"({missing} image-token positions untouched, "
            f"{extra} non-image positions replaced)",
            hint="get_image_token_id() returns the wrong token",
        )
    return CheckResult(detail=f"{int(is_image.sum())} image tokens == {int(replaced.sum())} image features")


# ---------------------------------------------------------- capability flags
def _compare_capability(vlm: HookedVLM, name: str, measurement: Measurement) -> CheckResult:
    declared = getattr(vlm.adapter.spec.capabilities, name)
    if declared != measurement.value:
        raise CheckFailure(
            f"capability {name} is declared {declared} but measured {measurement.value} "
            f"({measurement.evidence})",
            max_diff=measurement.max_diff,
            hint=f"set Capabilities({name}={measurement.value}) in the {vlm.adapter.spec.name} family spec",
        )
    return CheckResult(measurement.max_diff, f"declared == measured == {declared}: {measurement.evidence}")


@check("capability_contiguous_image_tokens")
def check_capability_contiguous(vlm: HookedVLM) -> CheckResult:
    """Declared ``contiguous_image_tokens`` equals what the processed input ids show."""
    return _compare_capability(vlm, "contiguous_image_tokens", measure_contiguous_image_tokens(vlm))


@check("capability_supports_batching")
def check_capability_batching(vlm: HookedVLM) -> CheckResult:
    """Declared ``supports_batching`` equals measured padded-batch parity."""
    return _compare_capability(vlm, "supports_batching", measure_batching(vlm))


@check("capability_strict_residual_stream")
def check_capability_strict_residual(vlm: HookedVLM) -> CheckResult:
    """Declared ``strict_residual_stream`` equals whether resid_post[i] is bit-equal to resid_pre[i+1]."""
    return _compare_capability(vlm, "strict_residual_stream", measure_strict_residual_stream(vlm))


assert {name.removeprefix("capability_") for name in CHECKS if name.startswith("capability_")} == set(
    CAPABILITY_NAMES
)


# ------------------------------------------------------ attention vs eager
def real_query_rows(inputs) -> torch.Tensor:
    """[B, 1, L, 1] bool: True for query positions that are real tokens (not left padding)."""
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(inputs["input_ids"])
    return mask.bool()[:, None, :, None]


def compare_layers(
    vlm: HookedVLM,
    pairs: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    *,
    kind: str,
    what: str,
    hint: str,
) -> float:
    """Compare ``(layer, actual, expected)`` pairs by max-abs difference; return the worst difference.

    ``kind`` picks the tolerance ("pattern": absolute, on [B, H, L, L]; "activation": relative to
    the reference, on [B, L, D]). Fails at the first layer over tolerance, naming it.
    """
    tolerance = getattr(tolerance_for(vlm.dtype), kind)
    axes = PATTERN_AXES if kind == "pattern" else STATE_AXES
    differences = [
        assert_close(
            actual,
            expected,
            tolerance=tolerance,
            relative=kind != "pattern",
            what=what,
            axes=axes,
            prefix=f"layer {layer}",
            hint=hint,
        )
        for layer, actual, expected in pairs
    ]
    return max(differences, default=0.0)


def compare_attention_to_eager(vlm: HookedVLM, inputs) -> tuple[float, list[torch.Tensor]]:
    """Recomputed patterns vs eager ``output_attentions``, every layer and head, by max-abs difference.

    Returns the worst difference and the recomputed patterns ([B, H, L, L] per layer). Rows of padding
    queries are excluded: they attend to nothing real, feed no real position, and in half precision
    eager's ``scores + finfo.min`` overflows to -inf there, so they carry no signal.
    """
    outputs, calls = run_eager_with_attention_inputs(vlm, inputs)
    if outputs.attentions is None or len(outputs.attentions) != len(calls):
        raise CheckFailure(
            "the model returned no per-layer attentions under eager with output_attentions=True"
        )
    padding = ~real_query_rows(inputs)
    recomputed = [
        vlm.adapter.compute_attention_patterns(
            call.hidden_states, call.layer, call.attention_mask, call.position_embeddings
        )
        for call in calls
    ]
    worst = compare_layers(
        vlm,
        (
            (call.layer, patterns.masked_fill(padding, 0), eager.masked_fill(padding, 0))
            for call, patterns, eager in zip(calls, recomputed, outputs.attentions)
        ),
        kind="pattern",
        what="recomputed attention pattern vs eager output_attentions",
        hint="the rotary function, q/k norms, kv-head grouping, scaling and mask in the attention recipe",
    )
    return worst, recomputed


@check("attention_vs_eager")
def check_attention_vs_eager(vlm: HookedVLM) -> CheckResult:
    """Recomputed patterns equal eager ``output_attentions`` per layer and head (single input)."""
    worst, _ = compare_attention_to_eager(vlm, single_probe(vlm))
    return CheckResult(worst, f"{vlm.lm_num_layers} layers x {vlm.adapter.lm_num_heads} heads")


@check("attention_vs_eager_padded_batch")
def check_attention_vs_eager_batch(vlm: HookedVLM) -> CheckResult:
    """Recomputed patterns equal eager ``output_attentions`` on a left-padded batch."""
    prompts, images = probe_batch(2)
    worst, _ = compare_attention_to_eager(vlm, vlm.prepare_messages_batch(prompts, images))
    return CheckResult(worst, "left-padded batch of 2")


@check("scores_softmax_patterns")
def check_scores_softmax(vlm: HookedVLM) -> CheckResult:
    """softmax(compute_attention_scores + mask) == compute_attention_patterns."""
    prompts, images = probe_batch(2)
    _, calls = run_eager_with_attention_inputs(vlm, vlm.prepare_messages_batch(prompts, images))

    def pairs() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for call in calls:
            args = (call.hidden_states, call.layer, call.attention_mask, call.position_embeddings)
            scores = vlm.adapter.compute_attention_scores(*args)
            patterns = vlm.adapter.compute_attention_patterns(*args)
            if call.attention_mask is None:
                window = getattr(vlm.adapter.get_lm_attn(call.layer), "sliding_window", None)
                mask = causal_mask(scores.shape[0], scores.shape[-1], torch.float32, scores.device, window)
            else:
                mask = call.attention_mask[..., : scores.shape[-1]].float()
            # Rounded to the model dtype as eager rounds its weights, so the comparison is exact.
            yield call.layer, patterns, torch.softmax(scores.float() + mask, dim=-1).to(patterns.dtype)

    worst = compare_layers(
        vlm,
        pairs(),
        kind="pattern",
        what="softmax(scores + mask) vs patterns",
        hint="compute_attention_patterns must use the scores",
    )
    return CheckResult(worst)


# ----------------------------------------------------------- cache vs model
def cached_per_layer(vlm: HookedVLM, hook_types: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    """Forward the single probe caching ``hook_types``; one {hook type: activation} dict per layer."""
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in hook_types]):
        vlm.forward(single_probe(vlm))
    return [
        {hook: vlm.cache[f"lm.blocks.{layer}.{hook}"] for hook in hook_types}
        for layer in range(vlm.lm_num_layers)
    ]


@check("resid_post_vs_hidden_states")
def check_resid_vs_hidden_states(vlm: HookedVLM) -> CheckResult:
    """``hook_resid_post[i]`` equals ``output_hidden_states[i + 1]`` (the final norm for the last layer)."""
    with vlm.run_with_cache("lm.blocks.*.hook_resid_post"):
        hidden_states = vlm.forward(single_probe(vlm), output_hidden_states=True).hidden_states
    layers = vlm.lm_num_layers
    if hidden_states is None or len(hidden_states) != layers + 1:
        count = "no" if hidden_states is None else len(hidden_states)
        raise CheckFailure(f"output_hidden_states returned {count} entries for {layers} layers")
    cached = [vlm.cache[f"lm.blocks.{layer}.hook_resid_post"] for layer in range(layers)]
    last, reported_last = cached[-1], hidden_states[-1]
    if max_abs_difference(last, reported_last).value > scaled(
        tolerance_for(vlm.dtype).activation, reported_last
    ):
        # transformers 5 reports the last entry after the decoder's final norm (all seed families).
        cached[-1] = vlm.adapter.get_lm_norm()(last)
    worst = compare_layers(
        vlm,
        ((layer, cached[layer], hidden_states[layer + 1]) for layer in range(layers)),
        kind="activation",
        what="hook_resid_post vs output_hidden_states",
        hint="the language model / layers path (off-by-one?)",
    )
    return CheckResult(worst, f"{layers} layers")


@check("head_out_sum")
def check_head_out_sum(vlm: HookedVLM) -> CheckResult:
    """Per-head outputs summed over heads (+ o_proj bias) equal ``attn.hook_out``."""
    per_layer = cached_per_layer(vlm, ("attn.hook_head_out", "attn.hook_out"))

    def pairs() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for layer, cache in enumerate(per_layer):
            bias = vlm.adapter.get_lm_o_proj(layer).bias
            total = cache["attn.hook_head_out"].sum(dim=2)
            yield layer, total if bias is None else total + bias, cache["attn.hook_out"]

    worst = compare_layers(
        vlm,
        pairs(),
        kind="activation",
        what="sum of attn.hook_head_out vs attn.hook_out",
        hint="compute_per_head_contributions / lm_num_heads / lm_head_dim",
    )
    return CheckResult(worst)


@check("mlp_decomposition")
def check_mlp_decomposition(vlm: HookedVLM) -> CheckResult:
    """act(hook_pre) * hook_pre_linear == hook_post and down_proj(hook_post) == hook_out."""
    modules = vlm.adapter.spec.modules
    if modules.gate_proj is None or modules.up_proj is None or modules.down_proj is None:
        return CheckResult(detail="not a gated MLP: decomposition not applicable")
    per_layer = cached_per_layer(
        vlm, ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "mlp.hook_out")
    )
    activations = [getattr(vlm.adapter.get_lm_mlp(layer), "act_fn", None) for layer in range(len(per_layer))]
    gated = compare_layers(
        vlm,
        (
            (layer, act(cache["mlp.hook_pre"]) * cache["mlp.hook_pre_linear"], cache["mlp.hook_post"])
            for layer, (cache, act) in enumerate(zip(per_layer, activations))
            if act is not None
        ),
        kind="activation",
        what="act(hook_pre) * hook_pre_linear vs hook_post",
        hint="gate_proj / up_proj names in the spec",
    )
    down = compare_layers(
        vlm,
        (
            (layer, vlm.adapter.get_lm_down_proj(layer)(cache["mlp.hook_post"]), cache["mlp.hook_out"])
            for layer, cache in enumerate(per_layer)
        ),
        kind="activation",
        what="down_proj(hook_post) vs hook_out",
        hint="down_proj name in the spec",
    )
    return CheckResult(max(gated, down))


@check("logit_lens")
def check_logit_lens(vlm: HookedVLM) -> CheckResult:
    """lm_head(final_norm(last hook_resid_post)) equals the model's logits."""
    last = f"lm.blocks.{vlm.lm_num_layers - 1}.hook_resid_post"
    with vlm.run_with_cache(last):
        logits = vlm.forward(single_probe(vlm)).logits
    lens = vlm.adapter.get_lm_head()(vlm.adapter.get_lm_norm()(vlm.cache[last]))
    worst = assert_close(
        lens,
        logits,
        tolerance=tolerance_for(vlm.dtype).activation,
        relative=True,
        what="logit lens vs logits",
        axes=("batch", "position", "vocab"),
        hint="the final norm / lm_head paths",
    )
    return CheckResult(worst)


@check("cache_non_invasive")
def check_cache_non_invasive(vlm: HookedVLM) -> CheckResult:
    """Logits are bit-identical with and without caching every hook."""
    inputs = single_probe(vlm)
    plain = vlm.forward(inputs).logits
    with vlm.run_with_cache([f"lm.blocks.*.{hook}" for hook in HOOK_TYPES]):
        cached = vlm.forward(inputs).logits
    if not torch.equal(plain, cached):
        difference = max_abs_difference(cached, plain)
        raise CheckFailure(
            "caching changed the logits",
            max_diff=difference.value,
            where=difference.describe(("batch", "position", "vocab")),
            hint="a hook that modifies its activation in place or returns a value",
        )
    return CheckResult(0.0, f"{len(HOOK_TYPES)} hook types on {vlm.lm_num_layers} layers")


@check("outputs_finite")
def check_outputs_finite(vlm: HookedVLM) -> CheckResult:
    """The forward pass produces finite logits (no NaN / Inf)."""
    logits = vlm.forward(single_probe(vlm)).logits
    bad = ~torch.isfinite(logits)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise CheckFailure(
            f"{int(bad.sum())} non-finite logits (NaN/Inf), first at (batch, position, vocab) {first}",
            hint="dtype overflow (try float32 / bfloat16), broken weights",
        )
    return CheckResult(detail=f"{logits.numel()} finite logits")


# ---------------------------------------------------------------- generation
@check("generation_first_token")
def check_generation_first_token(vlm: HookedVLM) -> CheckResult:
    """The first greedily generated token is the argmax of the forward pass's last logits."""
    inputs = single_probe(vlm)
    expected = int(vlm.forward(inputs).logits[0, -1].argmax())
    generated = vlm.generate(inputs, max_new_tokens=1, do_sample=False).sequences
    length = inputs["input_ids"].shape[1]
    got = int(generated[0, length])
    if got != expected:
        raise CheckFailure(
            f"generate() produced token {got}, forward argmax is {expected}",
            hint="generation inputs (pixel_values, mm_token_type_ids) dropped by prepare_messages",
        )
    return CheckResult(detail=f"token {got}")


@check("generation_batch_parity")
def check_generation_batch(vlm: HookedVLM) -> CheckResult:
    """Greedy batch generation of 2 equals generating each item alone (logits within tolerance)."""
    new_tokens = 3
    prompts, images = probe_batch(2)
    batch = vlm.generate_batch(
        vlm.prepare_messages_batch(prompts, images), max_new_tokens=new_tokens, output_logits=True
    )
    relative = tolerance_for(vlm.dtype).batch
    worst = 0.0
    for row, (prompt, image) in enumerate(zip(prompts, images)):
        single = vlm.generate(
            vlm.prepare_messages(prompt, image), max_new_tokens=new_tokens, output_logits=True
        )
        for step in range(new_tokens):
            single_logits, batch_logits = single.logits[step][0], batch.logits[step][row]
            tolerance = scaled(relative, single_logits)
            difference = max_abs_difference(batch_logits, single_logits)
            worst = max(worst, difference.value)
            if difference.value > tolerance:
                raise CheckFailure(
                    "batched generation diverges from single generation",
                    max_diff=difference.value,
                    where=f"item {row}, step {step}, vocab {difference.index[0]}",
                    hint="padding side / position ids / mask of batched inputs",
                )
            if int(batch_logits.argmax()) != int(single_logits.argmax()):
                top2 = single_logits.float().topk(2).values
                if float(top2[0] - top2[1]) > 2 * tolerance:
                    raise CheckFailure(f"batched generation picked another token at item {row}, step {step}")
                break  # a genuine near-tie: the continuations may legitimately differ from here on
    return CheckResult(worst, f"{new_tokens} tokens x 2 items")
