"""`legoc extract --method M` for every registered search method on the tiny MLP task."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.passes import METHODS

runner = CliRunner()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_extract_with_every_method(mlp_task, method):
    out = mlp_task["folder"].parent / "out" / "block.onnx"
    out.parent.mkdir()
    args = ["extract", str(mlp_task["model"]), "--task", str(mlp_task["spec"]), "-o", str(out)]
    args += ["--arch", mlp_task["arch"], "--method", method, "--budget", "60", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == method
    assert isinstance(summary["one_minimal"], bool)
    assert 0 < summary["evaluations"] <= 60
    assert summary["faithfulness"] >= 0.9  # the spec's keep
    assert method in summary["passes"]  # the search pass's own stats are reported
    assert out.is_file()
