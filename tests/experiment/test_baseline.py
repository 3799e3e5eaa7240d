"""Option A: family choice, size matching to a target, deterministic training, `legoc baseline`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.errors import LegocError
from legoc.experiment.baseline_nets import (
    InputShapes,
    build,
    choose_family,
    match_width,
    param_count,
)
from legoc.export.writer import module_to_onnx
from legoc.runtime.block import Block
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from legoc.task.training import TrainConfig, fit
from tests.helpers import write_task

runner = CliRunner()

FLAT = InputShapes({"x": (6,)}, {"x": torch.float32}, (4,))
IMAGE = InputShapes({"x": (1, 32, 32)}, {"x": torch.float32}, (3,))
TOKENS = InputShapes(
    {"input_ids": (12,), "attention_mask": (12,)},
    {"input_ids": torch.int64, "attention_mask": torch.int64},
    (2,),
    vocab=50,
)


def test_the_family_follows_the_input():
    assert choose_family(FLAT) == "mlp"
    assert choose_family(IMAGE) == "cnn"
    assert choose_family(TOKENS) == "transformer"
    two_ids = InputShapes({"a": (4,), "b": (4,)}, {"a": torch.int64, "b": torch.int64}, (2,))
    with pytest.raises(LegocError, match="one \\(N, L\\) input of token ids"):
        choose_family(two_ids)


@pytest.mark.parametrize(
    "family, inputs, target",
    [
        ("mlp", FLAT, 2_000),
        ("mlp", FLAT, 50_000),
        ("cnn", IMAGE, 5_000),
        ("cnn", IMAGE, 45_000),
        ("transformer", TOKENS, 10_000),
        ("transformer", TOKENS, 100_000),
    ],
)
def test_matched_size_lands_within_ten_percent(family, inputs, target):
    width, size = match_width(family, inputs, target)
    assert abs(size - target) <= 0.1 * target, (width, size)
    assert size == param_count(build(family, inputs, width))  # the count is the real one
    # and no other width is closer
    for other in (width - 1, width + 1):
        if other >= 1:
            assert abs(param_count(build(family, inputs, other)) - target) >= abs(size - target)


def test_every_family_runs_on_its_inputs():
    torch.manual_seed(0)
    for family, inputs, feeds in [
        ("mlp", FLAT, [torch.randn(3, 6)]),
        ("cnn", IMAGE, [torch.randn(3, 1, 32, 32)]),
        ("transformer", TOKENS, [torch.randint(0, 50, (3, 12)), torch.ones(3, 12, dtype=int)]),
    ]:
        assert build(family, inputs, 8)(*feeds).shape == (3, *inputs.out_shape)


def test_training_is_deterministic_under_a_seed_and_restores_the_best_weights():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    split = Split("search", {"x": x}, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long())
    states, reports = [], []
    for _ in range(2):
        torch.manual_seed(7)
        net = build("mlp", FLAT, 8)
        config = TrainConfig(epochs=4, lr=0.01, seed=3)
        reports.append(fit(net, ["x"], split, METRICS["accuracy"], config))
        states.append(net.state_dict())
    assert reports[0] == reports[1]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key])
    r = reports[0]
    assert (r.rows_train, r.rows_val) == (77, 19)
    assert r.val_loss_best <= r.val_loss_before
    assert 0 <= r.best_epoch <= r.epochs_run <= 4


def test_cli_baseline_like_a_block_and_at_given_sizes(tmp_path):
    task = write_task(tmp_path / "task", "mlp")
    like = tmp_path / "like.onnx"
    model = build("mlp", FLAT, 10)  # any block-shaped ONNX with inputs x and outputs logits
    onnx.save(module_to_onnx(model, ["x"], {"x": torch.zeros(2, 6)}), str(like))
    target = Block.load(like).param_count()
    out = tmp_path / "out" / "a.onnx"
    out.parent.mkdir()
    args = ["baseline", "--task", str(task["spec"]), "-o", str(out), "--epochs", "2"]
    result = runner.invoke(app, [*args, "--like", str(like)])
    assert result.exit_code == 0, result.output
    block = Block.load(out)
    assert abs(block.param_count() - target) <= 0.1 * target
    assert block.input_names == ["x"] and block.outputs[0].shape == ("batch", 4)
    baseline = block.meta("legoc.baseline")
    assert baseline["family"] == "mlp" and baseline["target_params"] == target
    assert block.meta("legoc.training")["data"] == "search"
    assert set(block.meta("legoc.scores")) == {"search", "iid"}
    assert block.meta("legoc.task") == "tiny-mlp"
    onnx.checker.check_model(block.model, full_check=True)

    result = runner.invoke(app, [*args, "--params", "300", "--params", "3000", "--force-dummy"])
    assert result.exit_code == 2  # unknown option: usage error
    result = runner.invoke(app, [*args, "--params", "300", "--params", "3000"])
    assert result.exit_code == 0, result.output
    for size in (300, 3000):
        count = Block.load(out.parent / f"a-{size}.onnx").param_count()
        assert abs(count - size) <= 0.1 * size


def test_cli_baseline_refuses_kl_and_missing_sizes_with_one_line(tmp_path):
    task = write_task(tmp_path / "task", "mlp", spec={"metric": "kl"})
    out = tmp_path / "out" / "a.onnx"
    out.parent.mkdir()
    for extra, needle in [(["--params", "100"], "metric kl"), ([], "--like BLOCK.onnx")]:
        result = runner.invoke(
            app, ["baseline", "--task", str(task["spec"]), "-o", str(out), *extra]
        )
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
        assert list(out.parent.iterdir()) == []


def test_cli_baseline_on_token_ids_trains_and_exports_a_transformer(tmp_path):
    """Token ids (with an attention mask) pick the transformer; it exports to plain ONNX and
    agrees with torch (the export's parity check)."""
    generator = torch.Generator().manual_seed(0)
    folder = tmp_path / "tokens"
    folder.mkdir()
    for split, n in (("search", 96), ("iid", 32)):
        ids = torch.randint(1, 20, (n, 8), generator=generator)
        mask = torch.ones(n, 8, dtype=torch.int64)
        mask[:, 6:] = 0
        y = (ids[:, 0] > 10).long()
        torch.save({"input_ids": ids, "attention_mask": mask, "y": y}, folder / f"{split}.pt")
    spec = folder / "spec.yaml"
    spec.write_text(
        "legoc: 1\nname: tokens\ndata:\n  search: search.pt\n  eval:\n    iid: iid.pt\n"
        "metric: accuracy\n"
    )
    out = tmp_path / "a.onnx"
    args = ["baseline", "--task", str(spec), "-o", str(out), "--params", "3000", "--epochs", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    block = Block.load(out)
    assert block.meta("legoc.baseline")["family"] == "transformer"
    assert block.input_names == ["input_ids", "attention_mask"]
    assert abs(block.param_count() - 3000) <= 300
    logits = block(input_ids=np.zeros((3, 8), np.int64), attention_mask=np.ones((3, 8), np.int64))
    assert logits["logits"].shape == (3, 2)
