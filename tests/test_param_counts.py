"""One number for one thing: every command reports a block's params, its source's params and
its stored initializers the same way (README "Parameters")."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from legoc.cli import app
from legoc.runtime import Block
from tests.helpers import FACTORIES, write_task

runner = CliRunner()


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The tiny residual CNN (it has BatchNorm statistics, which are buffers, not params),
    extracted twice (summary line, --json) with the same seed and budget."""
    folder = tmp_path_factory.mktemp("counts")
    task = write_task(folder / "task", "cnn")
    common = ("--task", task["spec"], "--arch", task["arch"], "--method", "greedy")
    line = invoke("extract", task["model"], *common, "--budget", "40", "-o", folder / "a.onnx")
    summary = json.loads(
        invoke(
            "extract", task["model"], *common, "--budget", "40", "-o", folder / "b.onnx", "--json"
        )
    )
    return {"task": task, "folder": folder, "line": line, "summary": summary}


def test_source_params_are_the_model_parameters(cnn):
    model = FACTORIES["cnn"]()
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert buffers > 0  # the count below would differ if buffers were counted
    params = cnn["summary"]["params"]
    assert params["source"] == trainable
    meta = Block.load(cnn["folder"] / "b.onnx").meta("legoc.rationale")["params"]
    assert meta == {"source": params["source"], "block": params["block"]}  # DESIGN contract


def test_summary_line_and_json_agree_and_say_one_minimal(cnn):
    params = cnn["summary"]["params"]
    line = cnn["line"]
    assert f"params {params['source']:,} -> {params['block']:,} (" in line
    minimal = "proven 1-minimal" if cnn["summary"]["one_minimal"] else "not proven 1-minimal"
    assert f"| {minimal} |" in line
    stored = Block.load(cnn["folder"] / "b.onnx").param_count()
    assert params["stored"] == stored >= params["block"]
    if stored != params["block"]:
        assert f"; stored {stored:,} with alignment zeros)" in line


def test_inspect_prints_the_source_params_and_buffers_apart(cnn):
    task = cnn["task"]
    text = invoke("inspect", task["model"], "--arch", task["arch"], "--input-shape", "x=1,8,8")
    model = FACTORIES["cnn"]()
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert f"params: {cnn['summary']['params']['source']} (+ {buffers} in buffers)\n" in text


def test_card_compose_and_catalog_use_the_same_counts(cnn):
    folder, params = cnn["folder"], cnn["summary"]["params"]
    block = folder / "b.onnx"
    invoke("card", block, "-o", folder / "card.md")
    card = (folder / "card.md").read_text()
    source, own, stored = params["source"], params["block"], params["stored"]
    assert f"| params source → block | {source:,} → {own:,} (" in card
    assert re.search(rf"\| stored \| {stored:,} initializer elements", card)

    pair = folder / "pair.onnx"
    out = invoke("compose", "parallel", block, block, "-o", pair)
    assert f"params {2 * own:,} (sum of the parts' params; stored {2 * stored:,})" in out
    assert Block.load(pair).rationale_params() == 2 * own
    invoke("card", pair, "-o", folder / "pair.md")
    assert (
        f"| params | {2 * own:,} (sum of the parts' params) |" in (folder / "pair.md").read_text()
    )

    catalog = folder / "catalog"
    assert f"params={own:,} " in invoke("catalog", "add", catalog, block)
    assert f"params={2 * own:,} " in invoke("catalog", "add", catalog, pair)
