"""Research of image marker tokens: measured on the tiny model, explained by exactly one config key."""

from __future__ import annotations

from vlmforge.scaffold.research.image_markers import config_token_id_keys, marker_ids_key


def test_config_token_id_keys_walk_sub_configs_and_skip_sizes() -> None:
    config = {
        "hidden_size": 5,
        "image_token_id": 4,
        "marker_token_ids": [5, 6, 7],
        "flag_id": True,
        "id2label": {0: "a"},
        "text_config": {"eos_token_id": [6, 7], "vocab_size": 8},
    }
    assert dict(config_token_id_keys(config)) == {
        "image_token_id": (4,),
        "marker_token_ids": (5, 6, 7),
        "text_config.eos_token_id": (6, 7),
    }


def test_marker_ids_key_is_the_one_key_listing_every_marker() -> None:
    config = {"hidden_size": 5, "marker_token_ids": [5, 6, 7], "text_config": {"eos_token_id": [6, 7]}}
    # hidden_size == 5 is no token-id key; eos lists 6 and 7 but not 5.
    assert marker_ids_key(config, [5, 6]) == ("marker_token_ids", ["marker_token_ids"])
    # Two keys list {6, 7}: ambiguous, so no answer (research reports it as unknown).
    assert marker_ids_key(config, [6, 7]) == (None, ["marker_token_ids", "text_config.eos_token_id"])
    # No key lists 9: no answer.
    assert marker_ids_key(config, [9]) == (None, [])


def test_research_measures_ovis2_markers_and_none_elsewhere(researched) -> None:
    ovis2 = researched("ovis2").answers["image_marker_ids_attribute"]
    assert (ovis2.value, ovis2.status) == ("visual_indicator_token_ids", "measured")
    assert "<IMG_START>" in ovis2.evidence
    llava = researched("llava").answers["image_marker_ids_attribute"]
    assert (llava.value, llava.status) == (None, "measured")
    unmeasured = researched("ovis2", measure=False).answers["image_marker_ids_attribute"]
    assert (unmeasured.value, unmeasured.status) == (None, "unknown")
