"""Set-up before the first evaluation costs one pass over the search split (issue 17): the
ablation means, the full model's score and the row order come from the same forward pass, and
the emptied model is scored only when a lower-is-better metric needs it."""

from __future__ import annotations

import pytest

from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from legoc.passes.search.masks import MASK_MACS, MIN_STEPS, steps_for_cost
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import labelled_data, trained_model


def _rows_scored_in_setup(monkeypatch, metric: str, n: int = 96) -> tuple[int, Scorer]:
    """Rows the scorer's forward passes read while it is built (the fit check's excepted)."""
    model = trained_model("mlp")
    data = labelled_data("mlp", n, 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    counted: list[int] = []
    original = Scorer._forward

    def counting(self, inputs):
        counted.append(next(iter(inputs.values())).shape[0])
        return original(self, inputs)

    monkeypatch.setattr(Scorer, "_forward", counting)
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS[metric])
    monkeypatch.setattr(Scorer, "_forward", original)
    return sum(counted), scorer


@pytest.mark.parametrize("metric", ["accuracy", "logit_diff"])
def test_a_higher_is_better_metric_sets_up_in_one_pass(monkeypatch, metric):
    rows, scorer = _rows_scored_in_setup(monkeypatch, metric)
    assert rows == len(scorer.split)
    assert scorer.reference.full > 0


def test_the_emptied_model_is_scored_when_faithfulness_needs_it(monkeypatch):
    rows, scorer = _rows_scored_in_setup(monkeypatch, "kl")
    assert rows == len(scorer.split)  # the full pass only (kl's outputs come from it)
    everything = scorer.ir.mask_for(scorer.ir.removable_groups())
    assert scorer.reference.empty == scorer.score(everything, count=False)
    assert scorer.reference.full == 0.0  # kl of the full model to itself


def test_mask_steps_shrink_with_the_models_cost():
    model = trained_model("mlp")
    data = labelled_data("mlp", 8, 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": data["x"][:2]})
    per_row = ir.macs_per_row()
    assert steps_for_cost(ir, 64) == MASK_MACS // (3 * per_row * 64)  # a tiny model: thousands
    assert steps_for_cost(ir, 64) > 300
    ir.macs_per_row = lambda: MASK_MACS  # a model as costly as the whole phase allows
    assert steps_for_cost(ir, 16) == MIN_STEPS
