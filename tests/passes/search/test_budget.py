"""The search budget counts all the work (legoc.passes.search, legoc.scoring.scorer.gradient_cost):
candidate evaluations plus gradient steps at their cost in forward passes; mask training is
sized to what is left; a deadline stops a search with what it has."""

from __future__ import annotations

import time

import pytest
import torch

from legoc.passes.base import PassContext
from legoc.passes.registry import PASSES
from legoc.scoring.budget import GRADIENT_STEP_COST, Budget, gradient_cost
from tests.passes.helpers import run_search
from tests.passes.search.test_search_methods import KEEP, exact, setup, tiny_fields, work

ROWS = 256  # setup()'s search rows


def run(name: str, budget: int, scorer=None, ir=None, progress=None, deadline=None, **extra):
    if scorer is None:
        ir, scorer = setup("mlp")
    cls = PASSES[name]
    options = {**tiny_fields(cls), **extra}
    result = run_search(cls(**options), ir, scorer, KEEP, budget, 0, (), progress, deadline)
    return result, scorer, ir


def test_a_gradient_step_costs_three_forwards_of_its_rows():
    _, scorer = setup("mlp")
    assert gradient_cost(32, ROWS) == pytest.approx(GRADIENT_STEP_COST * 32 / ROWS)
    scorer.attribution(scorer.ir.mask_for([]))  # every row once, forward and backward
    assert scorer.gradient_work == pytest.approx(GRADIENT_STEP_COST)
    gates = {name: torch.ones(space.size) for name, space in scorer.ir.spaces.items()}
    scorer.gated_loss(gates, torch.arange(32))
    assert scorer.gradient_work == pytest.approx(GRADIENT_STEP_COST * (1 + 32 / ROWS))
    assert scorer.evaluations == 0 and Budget(1, scorer).used == 0


@pytest.mark.parametrize("budget", [8, 20, 1000])
def test_mask_training_takes_at_most_half_the_budget_and_the_whole_run_fits(budget):
    result, scorer, _ = run("mask", budget)
    step = gradient_cost(32, ROWS)  # tiny_fields: 32 rows a step, 60 steps planned
    assert result.stats["mask_steps"] == min(60, int(0.5 * budget / step))
    assert scorer.gradient_work == pytest.approx(result.stats["mask_steps"] * step)
    assert result.stats["budget_used"] == pytest.approx(work(scorer)) and work(scorer) <= budget


@pytest.mark.parametrize("budget", [1, 2, 6, 20, 40])
def test_auto_with_a_tiny_budget_charges_its_mask_steps_and_never_exceeds(budget):
    result, scorer, _ = run("auto", budget)
    stats = result.stats
    step = gradient_cost(64, ROWS)  # auto trains on 64 rows a step (its MaskSearch defaults)
    assert stats["mask_steps"] == min(300, int(0.5 * budget / step))
    assert stats["evaluations"] == scorer.evaluations
    assert stats["budget_used"] == pytest.approx(work(scorer)) and work(scorer) <= budget
    assert scorer.gradient_work >= stats["mask_steps"] * step
    assert exact(scorer, result.ir.kept) >= KEEP


def test_auto_keeps_a_faithful_cut_that_leaves_no_budget_for_its_sweep():
    result, scorer, _ = run("auto", 20)
    assert result.stats["rounds"] == 0  # no sweep ran...
    assert result.stats["groups_removed"] > 0  # ...but the learned cut is the result
    assert exact(scorer, result.ir.kept) >= KEEP
    assert not result.stats["one_minimal"]


def test_a_search_does_not_start_a_gradient_pass_it_cannot_use():
    # 3 evaluations left: an attribution pass would leave none to score its ranking with
    result, scorer, _ = run("attribution", 3)
    assert work(scorer) == 0 and result.stats["groups_removed"] == 0
    result, scorer, _ = run("attribution", 4)
    assert scorer.gradient_work == GRADIENT_STEP_COST and work(scorer) <= 4


@pytest.mark.parametrize("name", ["auto", "greedy", "mcts", "mask", "attribution"])
def test_a_passed_deadline_stops_a_search_with_its_start(name):
    ir, scorer = setup("mlp")
    result, scorer, _ = run(name, 100, scorer=scorer, ir=ir, deadline=time.monotonic() - 1.0)
    assert scorer.evaluations == 0 and scorer.gradient_work == 0
    assert result.ir.removed_groups() == []


def test_mask_training_stops_at_the_deadline_and_reports_where():
    ir, scorer = setup("mlp")
    reports = []
    budget = Budget(100, scorer)

    def progress(phase, done, total):
        reports.append((phase, done, total))
        if phase == "mask training" and done == 10:
            budget.deadline = time.monotonic() - 1.0  # the clock runs out at step 10

    mask = PASSES["mask"](**tiny_fields(PASSES["mask"]))
    result = mask.run(ir, PassContext(scorer, budget, KEEP, 0, progress))
    assert result.stats["mask_steps"] == 10
    assert reports[-1] == ("mask training", 10, 10)  # the phase ends where it stopped
    assert scorer.evaluations == 0


def test_under_a_deadline_mask_training_takes_half_the_time_left(monkeypatch):
    ir, scorer = setup("mlp")
    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    train = scorer.gated_loss

    def slow_step(*args):  # every training step takes 10 s; evaluations take no time
        clock["now"] += 10.0
        return train(*args)

    monkeypatch.setattr(scorer, "gated_loss", slow_step)
    result, scorer, _ = run("mask", 100, scorer=scorer, ir=ir, deadline=clock["now"] + 200.0)
    # timed over the first steps at 10 s each: 100 s (half of 200) fit 10 of the 60 planned
    assert result.stats["mask_steps"] == 10
    assert result.stats["evaluations"] > 0
    assert result.stats["groups_removed"] > 0 and exact(scorer, result.ir.kept) >= KEEP
