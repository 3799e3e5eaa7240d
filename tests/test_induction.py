"""examples/induction: the heads its scores single out are the heads the block keeps."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.frontend.load import load_factory
from tests.helpers import assert_float_close

HERE = Path(__file__).resolve().parent.parent / "examples" / "induction"


def shipped_scores() -> dict:
    return json.loads((HERE / "heads.json").read_text())["heads"]


def test_head_scores_are_those_of_the_shipped_model():
    model = load_factory(f"{HERE / 'model.py'}:make_model")()
    model.load_state_dict(torch.load(HERE / "model.pt", weights_only=True))
    head_scores = load_factory(f"{HERE / 'heads.py'}:head_scores")
    found = head_scores(model.eval())["heads"]
    for head, values in shipped_scores().items():
        assert_float_close(torch.tensor(found[head]), torch.tensor(values))
    # the circuit is there: a previous-token head in layer 0, induction heads in layer 1
    best_prev = max(found, key=lambda h: found[h][0])
    best_induction = max(found, key=lambda h: found[h][1])
    assert best_prev.startswith("L0") and found[best_prev][0] > 0.5
    assert best_induction.startswith("L1") and found[best_induction][1] > 0.5


@pytest.mark.slow
def test_the_block_keeps_the_top_scoring_heads(tmp_path):
    """Layer 0: the top previous-token head and the top current-token head; layer 1: the
    induction heads it keeps are the top ones by induction score (about 5 min under load)."""
    out = tmp_path / "induction.onnx"
    args = ["extract", str(HERE / "model.pt"), "--arch", f"{HERE / 'model.py'}:make_model"]
    result = CliRunner().invoke(
        app, [*args, "--task", str(HERE / "task.yaml"), "-o", str(out), "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["faithfulness"] >= 0.95
    kept_of = load_factory(f"{HERE / 'report.py'}:kept_heads")
    kept = {head for head, k in kept_of(out).items() if k}
    scores = shipped_scores()
    layer0 = [h for h in scores if h.startswith("L0")]
    layer1 = sorted((h for h in scores if h.startswith("L1")), key=lambda h: -scores[h][1])
    top = {max(layer0, key=lambda h: scores[h][0]), max(layer0, key=lambda h: scores[h][2])}
    assert {h for h in kept if h.startswith("L0")} == top
    kept1 = [h for h in kept if h.startswith("L1")]
    assert kept1 and set(kept1) == set(layer1[: len(kept1)])
    assert onnx.load(str(out)).graph.input[0].name == "input_ids"
