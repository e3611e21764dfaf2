"""``python -m vlmforge``: the listing and the demo a newcomer runs first."""

from vlmforge.__main__ import main


def test_list_shows_families_checkpoints_aliases_and_tiny_names(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct", "alias: qwen3-vl-8b", "tiny/smolvlm",
                 "contiguous_image_tokens=False"):  # fmt: skip
        assert text in out


def test_demo_runs_offline_on_a_tiny_model(capsys):
    assert main(["demo", "tiny/smolvlm", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "20 image tokens" in out and "cache['lm.blocks.0.attn.hook_pattern']: (1, 6," in out


def test_demo_unknown_model_is_a_clear_error(capsys):
    assert main(["demo", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
