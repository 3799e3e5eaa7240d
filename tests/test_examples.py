"""The shipped examples, extracted for real through the CLI (a small budget keeps it quick;
the full-budget run is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from legoc.cli import app

SHAPES = Path(__file__).resolve().parent.parent / "examples" / "shapes"


def extract_shapes(tmp_path: Path, *extra: str) -> tuple[dict, Path]:
    out = tmp_path / "shapes.onnx"
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(SHAPES / "model.pt"),
            "--arch",
            f"{SHAPES / 'model.py'}:make_model",
            "--task",
            str(SHAPES / "task.yaml"),
            "-o",
            str(out),
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


@pytest.mark.parametrize(
    "method, budget",
    [
        # the default suite's real end-to-end extract: one attribution pass and 20 evaluations
        ("attribution", 20),
        # mask training over the real example: ~40 s on an idle 2-core machine
        pytest.param("mask", 60, marks=pytest.mark.slow),
    ],
)
def test_shapes_extract_with_a_small_budget_writes_a_faithful_smaller_block(
    tmp_path, method, budget
):
    summary, out = extract_shapes(tmp_path, "--method", method, "--budget", str(budget))
    assert summary["evaluations"] <= budget
    assert summary["faithfulness"] >= 0.95
    assert summary["params"]["block"] < summary["params"]["source"]
    assert summary["parity_max_abs_diff"] <= 1e-4
    assert set(summary["scores"]) == {"search", "iid", "sketch"}
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["legoc.task"] == "shapes-circle-square-triangle"
    # conv channels aligned for onnxruntime's blocked kernels, border maps folded away
    layout = json.loads(meta["legoc.layout"])
    assert layout["align_channels"] == 16 and layout["channels_added"] > 0
    weights = {t.name: t.dims for t in model.graph.initializer}
    widths = [weights[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"]
    assert widths and all(w % 16 == 0 for w in widths), widths
    assert not any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    if method == "mask":  # its cut removes conv channels that reach zero-padded borders
        assert summary["passes"]["align-channels"]["border_maps_folded"] > 0


@pytest.mark.slow
def test_shapes_full_extract_meets_the_issue_targets(tmp_path):
    summary, _ = extract_shapes(tmp_path)
    assert summary["faithfulness"] >= 0.95
    assert summary["params"]["block"] <= 0.25 * summary["params"]["source"]
