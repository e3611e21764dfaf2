"""Image marker tokens: tokens the vision side embeds besides the image tokens (Ovis2's visual indicators).

The spec declares the config attribute listing them (``image_token.marker_ids_attribute``); the adapter
reads their ids and ``image_token_count`` accepts exactly image positions plus declared marker positions
(research finding the attribute: ``tests/scaffold/test_image_markers_research.py``).
"""

from __future__ import annotations

import pytest

from tests.conftest import tiny_vlm
from vlmforge.core.errors import ContractError
from vlmforge.core.runtime import HookedVLM
from vlmforge.harness.checks import CHECKS
from vlmforge.harness.compare import CheckFailure
from vlmforge.harness.mutants import with_spec


def _declaring(vlm: HookedVLM, attribute: str | None) -> HookedVLM:
    """``vlm``'s model behind an adapter whose spec declares ``attribute`` as the marker-ids attribute."""
    adapter_class = with_spec(image_token__marker_ids_attribute=attribute)(type(vlm.adapter))
    return HookedVLM(
        vlm.model, vlm.prompt_processor, adapter=adapter_class(vlm.model), model_name=vlm.model_name
    )


def test_adapter_reads_declared_marker_ids_as_ints() -> None:
    ovis2 = tiny_vlm("ovis2")
    config = ovis2.model.config
    assert ovis2.adapter.get_image_marker_token_ids() == tuple(config.visual_indicator_token_ids)
    # A single int is one marker; nothing declared is none; a non-id value is a contract error.
    assert _declaring(ovis2, "text_config.eos_token_id").adapter.get_image_marker_token_ids() == (
        config.text_config.eos_token_id,
    )
    assert _declaring(ovis2, None).adapter.get_image_marker_token_ids() == ()
    with pytest.raises(ContractError, match="not a token id"):
        _declaring(ovis2, "text_config.model_type").adapter.get_image_marker_token_ids()
    with pytest.raises(ContractError, match="does not exist"):
        _declaring(ovis2, "no_such_ids").adapter.get_image_marker_token_ids()


def test_image_token_count_accepts_declared_markers_only() -> None:
    check = CHECKS["image_token_count"].function
    ovis2 = tiny_vlm("ovis2")
    result = check(ovis2)
    assert "marker positions from config.visual_indicator_token_ids" in result.detail
    # Undeclared markers: the positions the vision side writes besides the image tokens fail the check.
    with pytest.raises(CheckFailure, match=r"3 non-image positions replaced"):
        check(_declaring(ovis2, None))
    # A declared marker the vision side does not write (the end-of-turn token is in the prompt) fails too.
    with pytest.raises(CheckFailure, match=r"declared marker positions untouched"):
        check(_declaring(ovis2, "text_config.eos_token_id"))


def test_a_family_without_markers_still_passes_and_says_nothing_of_markers() -> None:
    result = CHECKS["image_token_count"].function(tiny_vlm("llava"))
    assert "marker" not in result.detail
