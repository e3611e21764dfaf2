"""A declared logit mask (``spec.logit_mask``) and decoders that embed their own ``input_ids``.

Chameleon pins its image-code logits to the dtype minimum and merges its VQ image codes into the
embeddings inside the decoder's own forward: the adapter exposes the mask, the harness compares logits
outside it, research measures it, and the image-token check reads the merged embeddings off the first
layer's input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlmforge.analysis import compute_logit_lens, logit_lens
from vlmforge.core.errors import ContractError
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.mutants import with_methods, with_spec
from vlmforge.harness.probes import language_model_inputs_embeds, single_probe, visible_logits
from vlmforge.scaffold.report import ResearchReport
from vlmforge.scaffold.research import research
from vlmforge.scaffold.research.logit_mask import find_id_attribute, masked_logit_columns, research_logit_mask


def _with_spec(vlm: HookedVLM, **changes) -> HookedVLM:
    adapter = with_spec(**changes)(type(vlm.adapter))(vlm.model)
    return HookedVLM(vlm.model, vlm.prompt_processor, adapter=adapter, model_name=vlm.model_name)


def test_adapter_mask_is_the_models_masked_ids(tiny) -> None:
    vlm = tiny("chameleon")
    mask = vlm.adapter.get_logit_mask()
    assert mask.tolist() == vlm.model.model.vocabulary_mapping.image_tokens
    logits = torch.randn(1, 3, vlm.model.config.vocab_size)
    masked = vlm.adapter.mask_logits(logits)
    assert not torch.equal(masked, logits)  # a copy: the input is left alone
    assert (masked[..., mask] == torch.finfo(logits.dtype).min).all()
    keep = torch.ones(logits.shape[-1], dtype=torch.bool)
    keep[mask] = False
    assert torch.equal(masked[..., keep], logits[..., keep])
    # The model's own logits hold exactly this mask.
    model_logits = vlm.forward(single_probe(vlm)).logits
    assert masked_logit_columns(model_logits)[0] == frozenset(mask.tolist())


def test_no_mask_declared_leaves_logits_alone(tiny) -> None:
    vlm = tiny("llava")
    logits = torch.randn(1, 2, 7)
    assert vlm.adapter.get_logit_mask() is None
    assert vlm.adapter.mask_logits(logits) is logits
    assert visible_logits(vlm, logits) is logits


def test_mask_path_that_holds_no_ids_is_a_contract_error(tiny) -> None:
    vlm = _with_spec(tiny("chameleon"), logit_mask="model.vocabulary_mapping.image_token_id")
    with pytest.raises(ContractError, match="not token ids"):
        vlm.adapter.get_logit_mask()


def test_visible_logits_zero_the_masked_columns_only(tiny) -> None:
    vlm = tiny("chameleon")
    logits = vlm.forward(single_probe(vlm)).logits
    visible = visible_logits(vlm, logits)
    mask = vlm.adapter.get_logit_mask()
    assert (visible[..., mask] == 0).all()
    assert visible.abs().max() < 1e3  # no dtype minimum left to scale a tolerance
    assert (visible != logits).any(dim=(0, 1)).nonzero().flatten().tolist() == mask.tolist()


def test_logit_lens_check_reports_the_mask_and_catches_a_wrong_one(tiny) -> None:
    vlm = tiny("chameleon")
    result = CHECKS["logit_lens"].function(vlm)
    assert "40 masked ids" in result.detail and result.max_diff < 1e-5
    first_ids = with_methods(get_logit_mask=lambda _self: torch.arange(5))(type(vlm.adapter))(vlm.model)
    wrong = HookedVLM(vlm.model, vlm.prompt_processor, adapter=first_ids, model_name=vlm.model_name)
    with pytest.raises(AssertionError, match=r"logits of the 5 ids of spec\.logit_mask are not the dtype"):
        CHECKS["logit_lens"].function(wrong)
    # Declared on a mapping, the ids would be its keys or values by accident: refused.
    with pytest.raises(ContractError, match="not token ids"):
        _with_spec(vlm, logit_mask="model.vocabulary_mapping.bpe2img").adapter.get_logit_mask()


def test_analysis_logit_lens_never_predicts_masked_ids(tiny) -> None:
    # A lens whose unembedding makes token 3 the most likely everywhere: masked, it never shows.
    head = nn.Linear(4, 6, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[3] = 10.0
    hidden = torch.ones(2, 5, 4)
    tokenizer = tiny("llava").prompt_processor.tokenizer
    plain = compute_logit_lens(hidden, nn.Identity(), head, tokenizer, top_k=2)
    masked = compute_logit_lens(hidden, nn.Identity(), head, tokenizer, top_k=2, logit_mask=torch.tensor([3]))
    decoded = tokenizer.decode([3])
    assert all(top[0][0] == decoded for layer in plain for top in layer)
    assert all(token != decoded for layer in masked for top in layer for token, _ in top)
    # On the model: the lens of the family applies the family's mask.
    vlm = tiny("chameleon")
    inputs = single_probe(vlm)
    tokenizer = vlm.prompt_processor.tokenizer
    masked_tokens = {tokenizer.decode([i]) for i in vlm.adapter.get_logit_mask().tolist()}
    lens = logit_lens(vlm, inputs, top_k=5)
    assert not {token for layer in lens for top in layer for token, _ in top} & masked_tokens


def test_find_id_attribute_walks_modules_objects_and_properties() -> None:
    class Vocabulary:
        def __init__(self) -> None:
            self.names = {"a": 1}

        @property
        def special(self) -> list[int]:
            return [7, 5, 6]

    model = nn.Module()
    model.inner = nn.Module()
    model.inner.vocabulary = Vocabulary()
    model.inner.register_buffer("blocked", torch.tensor([1, 2]))
    assert find_id_attribute(model, frozenset({5, 6, 7})) == "inner.vocabulary.special"
    assert find_id_attribute(model, frozenset({1, 2})) == "inner.blocked"
    assert find_id_attribute(model, frozenset({5, 6})) is None


def test_masked_logit_columns_need_the_minimum_at_every_position() -> None:
    logits = torch.randn(1, 3, 6)
    low = torch.finfo(logits.dtype).min
    logits[..., 2] = low
    logits[0, 1, 4] = low  # one position only: not a mask
    assert masked_logit_columns(logits) == (frozenset({2}), 3)


@pytest.mark.parametrize(
    ("source", "expected"), [("chameleon", "model.vocabulary_mapping.image_tokens"), ("llava", None)]
)
def test_research_measures_the_mask(source, expected) -> None:
    answer = research(source).answers["logit_mask"]
    assert answer.value == expected and answer.status == "measured", answer
    assert "dtype minimum" in answer.evidence


def test_unmeasured_mask_is_unknown_not_none() -> None:
    report = ResearchReport(None, "chameleon", "test")
    research_logit_mask(report, None, "no tiny model here", "chameleon")
    assert report.answers["logit_mask"].status == "unknown"


def test_first_layer_input_is_the_merged_embedding_of_a_self_embedding_decoder(tiny) -> None:
    vlm = tiny("chameleon")
    inputs = single_probe(vlm)
    ids = inputs["input_ids"]
    merged = language_model_inputs_embeds(vlm, inputs)
    text = vlm.adapter.language_model.get_input_embeddings()(ids)
    changed = (merged != text).any(dim=-1)
    assert torch.equal(changed, ids == vlm.adapter.get_image_token_id())
    # The image positions carry the embeddings of the VQ codes: rows of the same embedding table, at ids
    # among the image-code tokens the model never predicts (its logit mask).
    table = vlm.adapter.language_model.get_input_embeddings().weight
    same = (merged[changed][:, None] == table[None]).all(dim=-1)
    assert same.any(dim=-1).all()
    assert set(same.nonzero()[:, 1].tolist()) <= set(vlm.adapter.get_logit_mask().tolist())
