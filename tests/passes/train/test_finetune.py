"""`finetune` (option C): retrains a block's weights on search data, never its graph."""

from __future__ import annotations

from types import SimpleNamespace

import onnx
import torch

from legoc.ir.core import run_quietly
from legoc.passes.base import PassContext
from legoc.passes.registry import Finetune, parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.runtime.block import Block
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from legoc.task.training import evaluate
from tests.helpers import labelled_data
from tests.passes.helpers import case


def sliced_cnn_block():
    block = parse_pipeline(BLOCK_PIPELINE).run(case("cnn-mean")).ir
    return block


def blurred_cnn_block():
    """The sliced block with seeded noise on its weights: retraining must then lower the
    validation loss on every CPU. (The tiny model itself is trained by torch, so its exact
    weights differ between kernel dispatches, and from a good optimum a few epochs may not
    improve at all: best epoch 0 under ATEN_CPU_CAPABILITY=default, 1 under avx2.)"""
    block = sliced_cnn_block()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in block.gm.parameters():
            if param.numel() > 1:
                param.add_(0.5 * param.std() * torch.randn(param.shape, generator=gen))
    return block


def search_split(outputs=(0, 3), rows=160) -> Split:
    data = labelled_data("cnn", rows, 1, list(outputs))
    return Split("search", {"x": data["x"]}, data["y"])


def tune(block, split, seed=0, epochs=4, lr=0.003):
    # what finetune reads of the context's scorer: its split, metric and reference outputs
    scorer = SimpleNamespace(split=split, metric=METRICS["accuracy"], reference=SimpleNamespace())
    scorer.reference.outputs = None
    return Finetune(epochs=epochs, lr=lr).run(block, PassContext(scorer=scorer, seed=seed))


def test_weights_change_the_graph_does_not_and_the_input_is_untouched():
    block, split = blurred_cnn_block(), search_split()
    before = {k: v.clone() for k, v in block.gm.state_dict().items()}
    result = tune(block, split)
    assert result.ir.text() == block.text()  # same nodes, same shapes
    assert all(torch.equal(before[k], v) for k, v in block.gm.state_dict().items())
    stats = result.stats
    assert stats["best_epoch"] >= 1 and result.changed and stats["weights_rewritten"] > 0
    assert stats["params_trained"] == block.param_count()
    assert stats["val_loss_after"] < stats["val_loss_before"]
    assert not any(p.requires_grad for p in result.ir.gm.parameters())
    x = split.inputs["x"]
    changed = run_quietly(result.ir.gm, [x]) - run_quietly(block.gm, [x])
    assert float(changed.abs().max()) > 1e-3


def test_retraining_improves_the_search_metric_and_is_deterministic():
    block, split = sliced_cnn_block(), search_split()
    first, second = tune(block, split, seed=3), tune(block, split, seed=3)
    assert first.stats == second.stats
    again = second.ir.gm.state_dict()
    for key, value in first.ir.gm.state_dict().items():
        assert torch.equal(value, again[key]), key
    metric = METRICS["accuracy"]
    assert evaluate(first.ir.gm, ["x"], split, metric) >= evaluate(block.gm, ["x"], split, metric)


def test_no_improvement_keeps_the_starting_weights_and_reports_no_change():
    block, split = sliced_cnn_block(), search_split()
    result = tune(block, split, lr=100.0, epochs=2)  # steps that wreck the weights
    assert result.stats["best_epoch"] == 0 and result.stats["epochs_run"] == 2
    assert not result.changed and result.stats["weights_rewritten"] == 0
    tuned = result.ir.gm.state_dict()
    for key, value in block.gm.state_dict().items():
        assert torch.equal(tuned[key], value), key


def test_extract_with_finetune_records_the_retraining_and_passes_parity(tmp_path):
    from typer.testing import CliRunner

    from legoc.cli.app import app
    from tests.helpers import write_task

    task = write_task(tmp_path / "task", "cnn", spec={"finetune": {"epochs": 3, "lr": 0.005}})
    out = tmp_path / "block.onnx"
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "--arch", task["arch"]]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "retrained" in result.stdout
    block = Block.load(out)
    training = block.meta("legoc.training")
    assert training["epochs"] == 3 and training["lr"] == 0.005 and training["data"] == "search"
    assert training["rows_train"] + training["rows_val"] == 128
    assert "faithfulness_before" in training
    onnx.checker.check_model(block.model, full_check=True)
    plain = tmp_path / "plain.onnx"
    result = CliRunner().invoke(app, [*args, "-o", str(plain), "--no-finetune"])
    assert result.exit_code == 0, result.output
    assert Block.load(plain).meta("legoc.training") is None
    assert Block.load(plain).param_count() == block.param_count()
