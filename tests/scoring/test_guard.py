"""The over-fitting guard: a candidate faithful on `search` but not on `validate` is rejected,
by the scorer and by a search pass; the held-out part is seeded, disjoint and never empty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from legoc.errors import LegocError
from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from legoc.passes.base import PassContext
from legoc.passes.registry import parse_pipeline
from legoc.scoring.budget import Budget
from legoc.scoring.guard import GuardedScorer, split_validate
from legoc.scoring.scorer import Scorer
from legoc.task.data import Split
from legoc.task.metrics import METRICS

KEEP = 0.9


class TwoFeatures(nn.Module):
    """h = relu(x) unit by unit; class 0 iff h0 + h1 > 1. Unit 0 reads feature a, unit 1 b."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([-1.0, 0.0]))

    def forward(self, x):
        return self.head(torch.relu(self.fc(x)))


def _split(name: str, feature: int, n: int = 64) -> Split:
    """Rows where only `feature` varies (0 or 2): it alone decides the label."""
    x = torch.zeros(n, 2)
    x[:, feature] = 2.0 * (torch.arange(n) % 2)
    y = (x.sum(1) <= 1).long()  # class 0 when the sum exceeds 1
    return Split(name, {"x": x}, y)


def _scorers():
    model = TwoFeatures().eval()
    search, validate = _split("search", 0), _split("validate", 1)
    ir = build_ir(trace(model, ["x"]), ["x"], {"x": search.inputs["x"][:2]})
    metric = METRICS["accuracy"]
    on_search = Scorer(ir, search, metric, "mean")
    on_validate = Scorer(ir, validate, metric, values=on_search.values, label="validate")
    return ir, on_search, on_validate


def _group_of(ir, unit: int) -> int:
    (group,) = [g.index for g in ir.groups if ("fc", unit) in [(s, int(u)) for s, u in g.members]]
    return group


def _without_unit_1(ir):
    group = _group_of(ir, 1)
    return group, ir.mask_for([group])


def test_a_candidate_faithful_on_search_only_is_rejected():
    ir, on_search, on_validate = _scorers()
    _, kept = _without_unit_1(ir)
    assert on_search.faithfulness(kept, count=False) == 1.0  # b never varies in search
    assert on_validate.faithfulness(kept, count=False) == 0.5  # it decides every validate row
    guarded = GuardedScorer(on_search, on_validate)
    assert guarded.faithfulness(kept, keep=KEEP) == 0.5 < KEEP
    assert guarded.gap(kept)["overfit_gap"] == 0.5
    assert guarded.validate_evaluations == 1
    assert guarded.evaluations == on_search.evaluations == 1  # the budget counts search's


def test_a_candidate_missing_keep_on_search_is_not_scored_on_validate():
    ir, on_search, on_validate = _scorers()
    group = _group_of(ir, 0)
    guarded = GuardedScorer(on_search, on_validate)
    assert guarded.faithfulness(ir.mask_for([group]), keep=KEEP) < KEEP
    assert guarded.validate_evaluations == 0


@pytest.mark.parametrize("guard", [False, True])
def test_a_search_pass_keeps_the_unit_only_under_the_guard(guard):
    ir, on_search, on_validate = _scorers()
    group, _ = _without_unit_1(ir)
    scorer = GuardedScorer(on_search, on_validate) if guard else on_search
    ctx = PassContext(scorer, Budget(50, scorer), KEEP, seed=0)
    found = parse_pipeline("greedy").run(ir, ctx).ir
    assert (group in found.removed_groups()) is not guard


def test_the_validate_part_is_seeded_disjoint_and_complete():
    split = _split("search", 0, n=50)
    split.inputs["x"][:, 1] = torch.arange(50.0)  # a row id to follow the rows
    search, validate = split_validate(split, 0.2, seed=3)
    again, _ = split_validate(split, 0.2, seed=3)
    other, _ = split_validate(split, 0.2, seed=4)
    ids = lambda s: s.inputs["x"][:, 1].long().tolist()  # noqa: E731
    assert len(validate) == 10 and len(search) == 40
    assert sorted(ids(search) + ids(validate)) == list(range(50))
    assert ids(search) == sorted(ids(search)) and ids(again) == ids(search) != ids(other)
    assert torch.equal(search.y, split.y[torch.tensor(ids(search))])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001, 0.999])
def test_a_fraction_leaving_a_side_empty_is_refused(fraction):
    with pytest.raises(LegocError, match=r"validate .*at least one row"):
        split_validate(_split("search", 0, n=50), fraction, seed=0)
