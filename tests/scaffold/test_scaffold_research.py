"""Automated research: the general mechanism on many architectures, evidence, and meta-device cost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from vlmforge.core.spec import LLAMA_ROTARY, FamilySpec, spec_leaves
from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.generate import TEMPLATE_DIR
from vlmforge.scaffold.report import ResearchReport
from vlmforge.scaffold.research import TEMPLATE_SLOTS, default_adapter_class, default_family_name, research
from vlmforge.scaffold.research.forward_analysis import analyze_forward, evaluate_condition, gated_mlp_roles
from vlmforge.scaffold.research.module_tree import Decoder
from vlmforge.scaffold.research.norms import research_norms
from vlmforge.scaffold.schema import template_slots


def test_copier_answers_match_the_template_questions(researched) -> None:
    config = yaml.safe_load((TEMPLATE_DIR / "copier.yml").read_text())
    # Computed values (`when: false`, the spec layout) are not questions: nobody answers them.
    questions = {k for k, q in config.items() if not k.startswith("_") and q.get("when", True) is not False}
    answers = researched("llava").copier_answers("llava")
    assert set(answers) == questions
    # Every TODO slot is a place the template can render a TODO at: a spec field or a non-spec slot.
    assert template_slots(FamilySpec) == TEMPLATE_SLOTS
    assert set(answers) - {"adapter_class", "summary", "custom_processor", "todos"} <= TEMPLATE_SLOTS
    assert {"attention_recipe", "processor"} <= TEMPLATE_SLOTS


# Other image-text-to-text model_types transformers ships: what research answers without help.
@pytest.mark.parametrize(
    ("model_type", "expected"),
    [
        ("llava_next", {"language_model": "model.language_model", "rotary_function": LLAMA_ROTARY}),
        (
            "mistral3",
            {
                "rotary_function": "transformers.models.mistral.modeling_mistral.apply_rotary_pos_emb",
                "image_token_attribute": "image_token_id",
                "image_token": "[IMG]",
            },
        ),
        ("idefics2", {"language_model": "model.text_model", "image_token_attribute": "image_token_id"}),
        ("paligemma", {"rotary_function": "transformers.models.gemma.modeling_gemma.apply_rotary_pos_emb"}),
        (
            "qwen2_vl",
            {
                "rotary_function": "transformers.models.qwen2_vl.modeling_qwen2_vl.apply_rotary_pos_emb",
                "image_token": "<|image_pad|>",
            },
        ),
        ("internvl", {"rotary_function": "transformers.models.qwen2.modeling_qwen2.apply_rotary_pos_emb"}),
        (
            "gemma3",
            {
                "q_norm": "q_norm",
                "k_norm": "k_norm",
                "scaling": "scaling",
                "rotary_function": "transformers.models.gemma3.modeling_gemma3.apply_rotary_pos_emb",
            },
        ),
        ("lfm2_vl", {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2", "q_norm": "q_layernorm"}),
        # A fused [gate; up] projection, split by the hooks (forward chunks it, gate half first).
        (
            "glm4v",
            {"gate_up_proj": "gate_up_proj", "gate_proj": None, "up_proj": None, "down_proj": "down_proj"},
        ),
        # Mixture-of-experts MLPs on every layer: no dense projections; router, experts, shared experts.
        (
            "qwen3_vl_moe",
            {
                "moe_experts": "experts",
                "moe_router": "gate",
                "moe_shared_experts": None,
                "moe_experts_slot_rows": False,
                "rotary_convention": "cos_sin",
                "norms_after_rotary": False,
                "norms_where_present": False,
                "query_temperature": None,
            },
        ),
        # RoPE through apply_rotary_emb(q, k, freqs_cis) before the head transpose, on RoPE layers only; an
        # L2 q/k norm after it, built on RoPE layers only; a query temperature on the no-RoPE layers;
        # chunked-attention layers; experts returning one row per (expert slot, token).
        (
            "llama4",
            {
                "rotary_function": "transformers.models.llama4.modeling_llama4.apply_rotary_emb",
                "rotary_condition": "use_rope",
                "rotary_convention": "freqs_tokens_first",
                "q_norm": "qk_norm",
                "norms_after_rotary": True,
                "norms_where_present": True,
                "query_temperature": "attn_temperature_tuning and not use_rope",
                "attention_extras": "none",
                "moe_experts": "experts",
                "moe_experts_slot_rows": True,
            },
        ),
        # RoPE only where the layer has a sliding window (Cohere2's full-attention layers use none).
        ("cohere2_vision", {"rotary_condition": "sliding_window"}),
        # Cross-attention layers (attending to the image) in place of self-attention: not a hybrid decoder.
        (
            "mllama",
            {
                "layers": "layers",
                "attention": "self_attn",
                "cross_attention": "cross_attn",
                "hybrid": False,
                "input_norm": "input_layernorm",
            },
        ),
        # A hybrid decoder (linear-attention layers) with a gated query projection; no cross-attention.
        (
            "qwen3_5",
            {
                "attention": "self_attn",
                "hybrid": True,
                "query_gate": True,
                "rotary_condition": None,
                "cross_attention": None,
            },
        ),
        ("aria", {"moe_experts": "experts", "moe_router": "router", "moe_shared_experts": "shared_experts"}),
        (
            # A fused per-head query_key_value: q/k/v are its parts, the q/k norms follow its split.
            "fuyu",
            {
                "qkv_proj": "query_key_value",
                "q_proj": None,
                "k_proj": None,
                "v_proj": None,
                "q_norm": "q_layernorm",
                "k_norm": "k_layernorm",
                "attention_extras": "none",
            },
        ),
        # Gated cross-attention blocks in a decoder-level list of their own (Flamingo style): set aside as
        # the decoder's cross-attention blocks, not a second candidate for its layers. Its attention's
        # cross-attention and q/k-layer-norm branches are dead in self-attention, and the image token is
        # the one the processor looks up by a module constant.
        (
            "idefics",
            {
                "language_model": "model",
                "layers": "layers",
                "cross_attention_blocks": "gated_cross_attn_layers",
                "cross_attention": None,
                "rotary_function": "transformers.models.idefics.modeling_idefics.apply_rotary_pos_emb",
                "rotary_condition": None,
                "attention_extras": "none",
                "image_token": "<image>",
            },
        ),
    ],
)
def test_research_answers_other_vlms(model_type: str, expected: dict[str, str], researched) -> None:
    report = researched(model_type, False)
    # Unmeasured here (no tiny model): the spec's measured leaves and the chat-template / resizing answers.
    unmeasured = {"image_in_message", "continue_final_message", "image_resizing"}
    unmeasured |= {leaf.key for leaf in spec_leaves(FamilySpec) if leaf.info.measured}
    structural = {k: a for k, a in report.answers.items() if a.needs_edit and k not in unmeasured}
    assert not structural, {k: a.evidence for k, a in structural.items()}
    for key, value in expected.items():
        assert report.value(key) == value, (key, report[key].evidence)


@pytest.mark.parametrize(
    ("model_type", "key", "evidence"),
    [
        ("blip-2", "attention_extras", "self.q_proj(hidden_states) * self.scaling"),
    ],
)
def test_what_the_generic_mechanism_cannot_express_is_flagged(
    model_type: str, key: str, evidence: str, researched
) -> None:
    answer = researched(model_type, False)[key]
    assert answer.status == "hand_edit", answer
    assert evidence in answer.evidence, answer.evidence
    assert (
        key in researched(model_type, False).todos() or answer.slot in researched(model_type, False).todos()
    )


def test_an_unbuildable_default_config_falls_back_to_the_tiny_config() -> None:
    # chameleon's default config leaves its VQ vocabulary map unset and no real config is stored: the
    # tiny factory's config (same classes, the map filled from the tiny vocabulary) is researched.
    report = research("chameleon", measure=False)
    assert report.source.kind == "model_type" and "tiny config" in report.source.description
    assert report.value("model_class") == "ChameleonForConditionalGeneration"


def test_default_config_that_nothing_can_stand_in_for_is_reported(monkeypatch) -> None:
    from vlmforge.scaffold.research import pipeline

    def no_tiny(*args, **kwargs):
        raise ValueError("no tiny config either")

    monkeypatch.setattr(pipeline, "tiny_recipe", no_tiny)
    with pytest.raises(ScaffoldError, match=r"cannot build ChameleonForConditionalGeneration"):
        research("chameleon", measure=False)


def test_an_unbuildable_default_config_falls_back_to_a_stored_real_config() -> None:
    # transformers' default aya_vision config does not build (a 1152-wide tower with 14 heads); the stored
    # aya-vision-8b config of the same model_type is researched instead, and the report says so.
    report = research("aya_vision", measure=False)
    assert report.source.given == "CohereForAI/aya-vision-8b" and report.source.kind == "reference"
    assert "cannot be built" in report.source.description
    assert report.value("model_class") == "AyaVisionForConditionalGeneration"


def test_report_markdown_has_evidence_and_open_items(researched) -> None:
    text = researched("gemma3", False).to_markdown()
    assert "| question | answer | status | evidence |" in text
    assert "Gemma3Attention.forward applies self.q_norm" in text
    assert "## Needs a hand edit" in text
    # Template conventions are not claimed from the tiny stand-in template: they are left to the runtime.
    assert "left to the runtime" in text and "generic ChatML" not in text


def test_names() -> None:
    assert default_family_name("blip-2") == "blip_2"
    assert default_family_name("qwen2_5_vl") == "qwen2_5_vl"
    assert (
        default_adapter_class("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl")
        == "Qwen2_5_VLAdapter"
    )
    assert (
        default_adapter_class("smolvlm", "Idefics3ForConditionalGeneration", "idefics3") == "SmolvlmAdapter"
    )


def test_72b_config_is_researched_on_the_meta_device() -> None:
    # In a fresh interpreter so the peak RSS belongs to this research alone (fp32 weights would be ~290 GB).
    script = textwrap.dedent(
        """
        import json, resource, time
        from vlmforge.scaffold.research import research
        start = time.perf_counter()
        report = research("Qwen/Qwen2.5-VL-72B-Instruct", measure=False)
        print(json.dumps({
            "seconds": time.perf_counter() - start,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "evidence": report["language_model"].evidence,
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        "model.model.language_model.layers is a ModuleList of 80 Qwen2_5_VLDecoderLayer"
        in measured["evidence"]
    )
    assert measured["peak_mib"] < 3 * 1024, measured
    assert measured["seconds"] < 120, measured


# ------------------------------------------------------------------ forward analysis on synthetic modules
def apply_rotary_pos_emb(q, k, cos, sin):  # the name research looks for; resolved from this module's globals
    return q * cos + sin, k * cos + sin


class _Attention(nn.Module):
    def __init__(self, use_rope: bool = True) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)
        self.q_norm, self.k_norm = nn.LayerNorm(4), nn.LayerNorm(4)
        self.use_rope, self.scaling = use_rope, 0.5

    def forward(self, hidden_states, position_embeddings, attention_fn):
        query_states = self.q_norm(self.q_proj(hidden_states).view(1, -1, 2, 4)).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(1, -1, 2, 4).transpose(1, 2)
        if self.use_rope:
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        key_states = self.k_norm(key_states)
        query_states = query_states * 2.0
        return attention_fn(self, query_states, key_states, scaling=self.scaling, softcap=None)


def test_forward_analysis_reads_the_q_k_pipeline() -> None:
    analysis = analyze_forward(
        _Attention, q_proj="q_proj", k_proj="k_proj", norm_attributes=["q_norm", "k_norm"]
    )
    (call,) = analysis.rotary_calls
    assert call.dotted_path == f"{__name__}.apply_rotary_pos_emb"
    assert call.conditions == ("self.use_rope",)
    assert evaluate_condition(call.condition_nodes[0], _Attention(use_rope=False)) is False
    norms = {(n.attribute, n.variable) for n in analysis.norm_calls}
    assert norms == {("q_norm", "query_states"), ("k_norm", "key_states")}
    k_norm = next(n for n in analysis.norm_calls if n.attribute == "k_norm")
    assert analysis.rotary_line is not None and k_norm.line > analysis.rotary_line  # k is normed after RoPE
    assert analysis.unrecognized == ["query_states = query_states * 2.0"]
    assert analysis.scaling_attribute == "scaling"
    assert analysis.kernel_keywords["softcap"] == "None"


def test_rotary_calls_record_which_tensors_they_rotate() -> None:
    analysis = analyze_forward(
        _Attention, q_proj="q_proj", k_proj="k_proj", norm_attributes=["q_norm", "k_norm"]
    )
    (call,) = analysis.rotary_calls
    assert set(call.variables) >= {"query_states", "key_states", "cos", "sin"}
    assert call.line == analysis.rotary_line


def test_k_norm_before_its_own_per_tensor_rope_is_found(researched) -> None:
    # Gemma3n rotates q and k in separate calls apply_rotary_pos_emb(x, cos, sin): q is rotated before k is
    # normed, but k's norm comes before k's own RoPE, which is what the adapter's recipe needs.
    answer = researched("gemma3n", False)["k_norm"]
    assert answer.value == "k_norm" and "after RoPE" not in answer.evidence, answer.evidence


def test_conditions_on_runtime_values_are_undecidable() -> None:
    import ast

    assert (
        evaluate_condition(ast.parse("position_embeddings is not None", mode="eval").body, object()) is None
    )
    assert evaluate_condition(ast.parse("hasattr(self, 'q_norm')", mode="eval").body, _Attention()) is True


class _SwiGLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.nn.functional.silu(self.w1(x)) * self.w3(x))


def test_gate_and_up_are_told_apart_from_the_mlp_source() -> None:
    gate, up, evidence = gated_mlp_roles(_SwiGLU, ["w1", "w3"])
    assert (gate, up) == ("w1", "w3"), evidence


def test_a_local_dir_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match=r"without a config\.json"):
        research(str(tmp_path))


class _SandwichBlock(nn.Module):
    """Names that say nothing: which norm feeds what is only visible in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm_a, self.norm_b, self.norm_c = nn.LayerNorm(4), nn.LayerNorm(4), nn.LayerNorm(4)
        self.self_attn, self.mlp = nn.Identity(), nn.Identity()

    def forward(self, x):
        attended = self.self_attn(self.norm_b(x))
        x = x + self.norm_a(attended)  # a norm on the attention output, then the pre-MLP norm
        return x + self.mlp(self.norm_c(x))


def test_block_norms_are_read_from_forward_not_from_names() -> None:
    layers = nn.ModuleList([_SandwichBlock(), _SandwichBlock()])
    report = ResearchReport(source=None, model_type="sandwich", transformers_version="")  # type: ignore[arg-type]
    research_norms(Decoder("model", nn.Module(), "layers", layers), "self_attn", "mlp", report)
    assert (report["input_norm"].value, report["input_norm"].status) == ("norm_b", "found")
    assert (report["mlp_norm"].value, report["mlp_norm"].status) == ("norm_c", "found")
    assert "all 2 layers" in report["mlp_norm"].evidence
    # A block that never calls the named MLP child: nothing is claimed.
    research_norms(Decoder("model", nn.Module(), "layers", layers), "self_attn", "feed_forward", report)
    assert (report["mlp_norm"].value, report["mlp_norm"].status) == (None, "unknown")


def test_gemma3_block_norms(researched) -> None:
    report = researched("gemma3", False)
    assert report.value("input_norm") == "input_layernorm"
    assert report.value("mlp_norm") == "pre_feedforward_layernorm"  # not the post-attention norm


class _ToyAttention(nn.Module):
    """A softmax attention over the token stream (its forward takes the hidden states only)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(4, 4) for _ in range(4))

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None):
        return self.o_proj(self.v_proj(hidden_states))


class _ToyCrossAttention(_ToyAttention):
    """Keys and values from a second sequence (the image features)."""

    def forward(self, hidden_states, key_value_states=None, attention_mask=None):
        return self.o_proj(self.v_proj(key_value_states))


class _ToyBlock(nn.Module):
    def __init__(self, mixer: str, module: nn.Module) -> None:
        super().__init__()
        setattr(self, mixer, module)
        self.mlp = nn.Identity()


def _blocks_report(*blocks: nn.Module) -> ResearchReport:
    from transformers import LlamaConfig

    from vlmforge.scaffold.research.blocks import research_blocks

    report = ResearchReport(source=None, model_type="toy", transformers_version="")  # type: ignore[arg-type]
    config = LlamaConfig(hidden_size=4, num_attention_heads=1, num_key_value_heads=1, intermediate_size=8)
    research_blocks(Decoder("model", nn.Module(), "layers", nn.ModuleList(blocks)), config, report)
    return report


def test_cross_attention_layers_are_found_by_the_second_sequence_they_attend_to() -> None:
    # The cross-attention child is the minority here and has a query projection like self-attention:
    # what tells it apart is the forward's second sequence (key_value_states), not its name.
    report = _blocks_report(
        _ToyBlock("self_attn", _ToyAttention()),
        _ToyBlock("xattn", _ToyCrossAttention()),
        _ToyBlock("self_attn", _ToyAttention()),
    )
    assert report.value("attention") == "self_attn"
    assert report.value("cross_attention") == "xattn"
    assert "key_value_states" in report["cross_attention"].evidence
    assert report.value("hybrid") is False  # cross-attention layers are declared, not a hybrid's mixers


def test_another_mixer_over_the_tokens_is_hybrid_not_cross_attention() -> None:
    # The same layout with a mixer that takes the hidden states only: a hybrid decoder, no cross-attention.
    report = _blocks_report(
        _ToyBlock("self_attn", _ToyAttention()),
        _ToyBlock("xattn", _ToyAttention()),
        _ToyBlock("self_attn", _ToyAttention()),
    )
    assert report.value("attention") == "self_attn"
    assert report.value("cross_attention") is None
    assert report.value("hybrid") is True


class _ToyDecoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn, self.mlp = _ToyAttention(), nn.Identity()

    def forward(self, hidden_states, attention_mask=None):
        return hidden_states


class _ToyGatedCrossBlock(_ToyDecoderLayer):
    """A Flamingo-style block: attends to the image features it is handed besides the token stream."""

    def forward(self, hidden_states, attention_mask=None, image_hidden_states=None):
        return hidden_states


class _ToyFlamingoDecoder(nn.Module):
    def __init__(self, blocks: type[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_ToyDecoderLayer() for _ in range(2))
        self.gated_cross_attn_layers = nn.ModuleList(blocks() for _ in range(2))
        self.norm = nn.LayerNorm(4)


def test_cross_attention_block_lists_are_set_aside_from_the_decoder_layers() -> None:
    from vlmforge.scaffold.research.layout import _find_decoder

    decoder = _ToyFlamingoDecoder(_ToyGatedCrossBlock)
    config = SimpleNamespace(num_hidden_layers=2)
    search = _find_decoder(decoder, {id(decoder): ""}, config)
    assert search.decoder is not None and search.decoder.layers_attr == "layers"
    assert [c.layers_attr for c in search.cross] == ["gated_cross_attn_layers"]
    # Blocks over the token stream only are no cross-attention: both lists qualify, nothing is guessed.
    plain = _ToyFlamingoDecoder(_ToyDecoderLayer)
    assert _find_decoder(plain, {id(plain): ""}, config).decoder is None


class _BranchingAttention(nn.Module):
    """IDEFICS-like: the cross-attention and q/k-norm branches depend on a local and on a second sequence."""

    def __init__(self, is_cross_attention: bool = False, qk_norms: bool = False) -> None:
        super().__init__()
        self.is_cross_attention, self.qk_norms = is_cross_attention, qk_norms
        self.q_proj, self.k_proj = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, hidden_states, key_value_states=None, position_ids=None):
        is_cross_attention = self.is_cross_attention or key_value_states is not None
        query_states = self.q_proj(hidden_states)
        if not is_cross_attention:  # noqa: SIM108 - the branches are what the analysis reads
            key_states = self.k_proj(hidden_states)
        else:
            key_states = self.k_proj(key_value_states)
        if not is_cross_attention:
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, None, None)
        if self.qk_norms:
            query_states = self.q_extra(query_states)
        return query_states, key_states


def test_conditions_read_through_top_level_locals_and_an_absent_second_sequence() -> None:
    from vlmforge.scaffold.research.attention import _dead

    analysis = analyze_forward(_BranchingAttention, q_proj="q_proj", k_proj="k_proj")
    (call,) = analysis.rotary_calls
    assert call.conditions == ("not is_cross_attention",)  # the evidence shows the test as written
    # ... and it is decided per module through the local's assignment, key_value_states being None.
    assert evaluate_condition(call.condition_nodes[0], _BranchingAttention()) is True
    assert evaluate_condition(call.condition_nodes[0], _BranchingAttention(is_cross_attention=True)) is False
    lines = dict(zip(analysis.unrecognized, analysis.unrecognized_conditions, strict=True))
    cross_key = "key_states = self.k_proj(key_value_states)"
    extra = "query_states = self.q_extra(query_states)"
    assert set(lines) == {cross_key, extra}
    # Dead on every self-attention module here; alive as soon as one module takes the branch.
    assert _dead(lines[cross_key], [_BranchingAttention(), _BranchingAttention()])
    assert _dead(lines[extra], [_BranchingAttention()])
    assert not _dead(lines[extra], [_BranchingAttention(), _BranchingAttention(qk_norms=True)])
    assert not _dead((), [_BranchingAttention()])  # an unconditional statement always runs


def test_image_token_is_read_from_the_processor_image_token_id() -> None:
    from vlmforge.scaffold.research.image_token import _token_string

    class _Tokenizer:
        def convert_ids_to_tokens(self, token_id):
            return {7: "<image>"}[token_id]

        def convert_tokens_to_ids(self, token):
            return {"<image>": 7}[token]

    class _Processor:  # no image_token attribute: the id only, looked up through a module constant
        def __init__(self) -> None:
            self.tokenizer = _Tokenizer()
            self.image_token_id = self.tokenizer.convert_tokens_to_ids(_IMAGE_TOKEN_CONSTANT)

    found = _token_string(_Processor(), trusted=False)
    assert (found.token, found.tokenizer_id, found.vouched_by) == ("<image>", 7, "literal")

    class _Unvouched(_Processor):
        def __init__(self) -> None:
            self.tokenizer = _Tokenizer()
            self.image_token_id = 7

    unvouched = _token_string(_Unvouched(), trusted=False)
    assert unvouched.token == "<image>" and unvouched.vouched_by is None  # a stand-in tokenizer says so only


_IMAGE_TOKEN_CONSTANT = "<image>"
