"""`legoc inspect`: the IR text of a model, its input shapes from flags or from a task, and the
full model's scores with a task. (Its bad input shares extract's cases: test_bad_input.py.)"""

from __future__ import annotations

from legoc.cli.app import app
from tests.cli.helpers import runner
from tests.helpers import error_lines


def test_inspect_prints_ir_text(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x=6"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("graph(%x: f32[N,6]):")
    assert "units:\n  fc1: linear, 8/8 units kept" in result.stdout
    assert "params: 164\n" in result.stdout
    assert "scores" not in result.stdout


def test_inspect_without_shapes_or_task_is_usage_error(mlp_task):
    result = runner.invoke(app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"]])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    lines = error_lines(result)
    assert len(lines) == 1 and "--input-shape x=" in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_inspect_malformed_shape_is_usage_error(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x6"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: --input-shape 'x6': expected NAME=D1,D2,... "
        "(without batch)"
    )


def test_inspect_shape_that_does_not_fit_is_one_line(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x=7"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1 and "does not run on {'x': (7,)}" in lines[0], result.stderr


def test_inspect_with_task_scores_the_full_model(mlp_task):
    result = runner.invoke(
        app,
        [
            "inspect",
            str(mlp_task["model"]),
            "--arch",
            mlp_task["arch"],
            "--task",
            str(mlp_task["spec"]),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "graph(%x: f32[N,6]):" in result.stdout
    tail = result.stdout.split("scores (full model):\n", 1)[1]
    # labels are the trained model's own predictions, so the full model scores exactly 1
    assert tail == "  search: 1\n  iid: 1\n"
