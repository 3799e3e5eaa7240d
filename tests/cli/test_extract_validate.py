"""`search.validate` in `extract`: the guarded search, the block's `legoc.validate` metadata
(faithfulness on both parts and their gap), the summary line, JSON and the card."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.runtime import Block, write_card
from tests.helpers import write_task

runner = CliRunner()


def test_extract_with_validate_reports_the_gap_everywhere(tmp_path):
    task = write_task(tmp_path / "task", "mlp", spec={"search": {"validate": 0.25, "budget": 60}})
    out = tmp_path / "block.onnx"
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "--arch", task["arch"]]
    result = runner.invoke(app, [*args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    held = Block.load(out).meta("legoc.validate")
    assert held == summary["validate"] and held["fraction"] == 0.25
    gap = held["faithfulness_search"] - held["faithfulness_validate"]
    assert held["overfit_gap"] == pytest.approx(gap, abs=1e-12)
    assert min(held["faithfulness_search"], held["faithfulness_validate"]) >= 0.9  # keep
    assert f"over-fitting gap | {held['overfit_gap']:+.4f}" in write_card(out).card.read_text()
    line = runner.invoke(app, [*args, "-o", str(tmp_path / "again.onnx")])
    assert line.exit_code == 0 and f"gap {held['overfit_gap']:+.3f}" in line.stdout
