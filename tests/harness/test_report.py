"""The conformance matrix: recording phases, rendering, and the files --conformance-report writes."""

import json

from vlmforge.harness.report import Cell, ConformanceMatrix


def test_a_failure_in_any_phase_wins_over_later_reports():
    matrix = ConformanceMatrix()
    matrix.record("m", "check", Cell("failed", 0.5, "setup broke"))
    matrix.record("m", "check", Cell("passed"))
    assert matrix.cells["m"]["check"].outcome == "failed"
    matrix.record("m", "other", Cell("passed", 1e-7))
    matrix.record("m", "other", Cell("failed", None, "teardown broke"))
    assert [c for _, c, _ in matrix.failures()] == ["check", "other"]


def test_renderings_and_files(tmp_path):
    matrix = ConformanceMatrix()
    matrix.record("tiny/a", "attention_vs_eager", Cell("passed", 0.0))
    matrix.record("tiny/b", "attention_vs_eager", Cell("failed", 0.03, "pattern differs at layer 1, head 2"))
    matrix.record("tiny/b", "batching", Cell("skipped", None, "declares supports_batching=False"))
    text = matrix.to_text()
    assert "pass 0.0e+00" in text and "FAIL 3.0e-02" in text
    markdown = matrix.to_markdown()
    assert "| attention_vs_eager | pass 0.0e+00 | FAIL 3.0e-02 |" in markdown
    assert "`tiny/b` / `attention_vs_eager`: pattern differs at layer 1, head 2" in markdown
    assert "declares supports_batching=False" in markdown
    json_path, md_path = matrix.write(tmp_path / "out" / "report")
    assert json.loads(json_path.read_text())["tiny/b"]["attention_vs_eager"]["max_diff"] == 0.03
    assert md_path.read_text().startswith("# vlmforge conformance")
