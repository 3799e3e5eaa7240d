"""`legoc extract --method M` for every search method on the tiny MLP task; `--passes` and
`--print-ir-after`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.passes.registry import METHODS

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


def extract_args(mlp_task, *extra: str) -> list[str]:
    out = mlp_task["folder"].parent / "out" / "block.onnx"
    out.parent.mkdir(exist_ok=True)
    args = ["extract", str(mlp_task["model"]), "--task", str(mlp_task["spec"]), "-o", str(out)]
    return [*args, "--arch", mlp_task["arch"], "--budget", "60", "--json", *extra]


def test_passes_replace_the_search_pipeline(mlp_task):
    result = runner.invoke(app, extract_args(mlp_task, "--passes", "magnitude,repair,minimize"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "magnitude,repair,minimize"
    assert {"magnitude", "repair"} <= set(summary["passes"]) and "auto" not in summary["passes"]
    assert summary["faithfulness"] >= 0.9 and 0 < summary["evaluations"] <= 60


@pytest.mark.parametrize(
    ("passes", "needle"),
    [
        ("magnitude,shrink", "--passes: unknown pass 'shrink'; passes are: "),
        ("mcts{depth=2}", "--passes: pass mcts: unknown option 'depth'"),
        ("greedy,dce", "--passes: dce is a rewrite pass; --passes takes search passes"),
    ],
)
def test_a_bad_passes_pipeline_is_one_error_line_with_exit_2(mlp_task, passes, needle):
    result = runner.invoke(app, extract_args(mlp_task, "--passes", passes))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert needle in result.stderr


def test_print_ir_after_prints_the_ir_after_each_run_of_the_pass(mlp_task):
    result = runner.invoke(app, extract_args(mlp_task, "--print-ir-after", "slice-units", "-q"))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("# IR after slice-units\n") == 1
    assert "params:" in result.stderr.split("# IR after slice-units\n", 1)[1]
    json.loads(result.stdout)  # the summary stays clean JSON


def test_print_ir_after_an_unknown_pass_is_exit_2(mlp_task):
    result = runner.invoke(app, extract_args(mlp_task, "--print-ir-after", "slice"))
    assert result.exit_code == 2
    assert "--print-ir-after: unknown pass 'slice'" in result.stderr
