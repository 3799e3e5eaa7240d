"""Next-token tasks on a tiny GPT-style model (a Hugging Face folder, random init): labels per
position with -100 where a position does not count, and one position per row read from the
data (`position: <key>`) or the attention mask (`position: last`), for every metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.task.metrics import IGNORE, METRICS
from tests.helpers import assert_float_close

transformers = pytest.importorskip("transformers")

VOCAB, TOKENS, ROWS = 24, 10, 48


def write_gpt_task(folder: Path, position: str, metric: str) -> Path:
    """A 1-layer GPT-2 saved with save_pretrained; rows right-padded to TOKENS with a per-row
    end `end`; labels are the model's own next-token predictions (full accuracy 1.0)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=TOKENS, n_embd=16, n_layer=1, n_head=2, n_inner=32
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder / "model")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (ROWS, TOKENS), generator=gen)
    end = torch.randint(3, TOKENS, (ROWS,), generator=gen)  # the last real token's position
    mask = (torch.arange(TOKENS) <= end[:, None]).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    predicted = logits.argmax(-1)
    data = {"input_ids": ids, "attention_mask": mask, "end": end}
    if position == "all":  # every real position after the first counts
        y = predicted.masked_fill(mask == 0, IGNORE)
        y[:, 0] = IGNORE
        data["y"] = y
    else:
        data["y"] = predicted[torch.arange(ROWS), end]
        data["y_alt"] = logits[torch.arange(ROWS), end].argsort(-1)[:, -2]  # runner-up
    torch.save(data, folder / "search.pt")
    spec = folder / "task.yaml"
    spec.write_text(
        f"legoc: 1\nname: next-token\ndata:\n  search: search.pt\nmetric: {metric}\n"
        f"position: {position}\nkeep: 0.8\nsearch:\n  method: attribution\n  budget: 10\n"
    )
    return spec


@pytest.mark.parametrize(
    "position, metric",
    [("all", "accuracy"), ("end", "logit_diff"), ("last", "kl")],
)
def test_gpt_next_token_extract(tmp_path, position, metric):
    spec = write_gpt_task(tmp_path, position, metric)
    out = tmp_path / "block.onnx"
    args = ["extract", str(tmp_path / "model"), "--task", str(spec), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["faithfulness"] >= 0.8
    assert summary["parity_max_abs_diff"] <= 1e-4
    if metric == "accuracy":
        assert summary["scores"]["search"]["metric_full"] == 1.0


def test_ignored_items_and_positions_do_not_count():
    logits = torch.randn(3, 4, 5)
    y = torch.full((3, 4), IGNORE)
    y[0, 1], y[2, 3] = int(logits[0, 1].argmax()), (int(logits[2, 3].argmax()) + 1) % 5
    total, count = METRICS["accuracy"].batch_sum(logits, y, None)
    assert (total, count) == (1.0, 2)
    at = torch.tensor([1, 0, 3])  # one position per row: labels and outputs read there
    total, count = METRICS["accuracy"].batch_sum(logits, y, None, at=at)
    assert (total, count) == (1.0, 2)  # row 1 reads position 0: ignored
    diff, count = METRICS["logit_diff"].batch_sum(logits, y, None, at=at)
    expected = 0.0
    for row, pos in ((0, 1), (2, 3)):
        scores = logits[row, pos]
        label = int(y[row, pos])
        expected += float(scores[label] - scores[torch.arange(5) != label].max())
    assert count == 2
    assert_float_close(torch.tensor(diff), torch.tensor(expected))
    kl, count = METRICS["kl"].batch_sum(logits, y, logits)
    assert count == 2 and abs(kl) <= 1e-6


@pytest.mark.parametrize("metric", ["accuracy", "logit_diff", "kl"])
def test_numpy_scores_leave_out_ignored_items_like_torch(metric):
    from legoc.runtime.scores import metric_value

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, 5, generator=gen)
    y = torch.randint(0, 5, (4, 6), generator=gen)
    y[:, :2] = IGNORE
    ref = logits + 0.1 * torch.randn(4, 6, 5, generator=gen)
    total, count = METRICS[metric].batch_sum(logits, y, ref)
    got = metric_value(metric, logits.numpy(), y.numpy(), ref.numpy())
    assert count == 16
    assert abs(got - total / count) <= 1e-5 * max(1.0, abs(got))
