"""`magnitude`: one-shot pruning along the weight-norm ranking (the simplest peer method)."""

from __future__ import annotations

import numpy as np

from legoc.passes.registry import MagnitudeSearch, parse_pipeline
from legoc.passes.search.magnitude import magnitude_scores
from legoc.passes.search.ranking import group_order
from tests.passes.helpers import run_search
from tests.passes.search.test_search_methods import KEEP, exact, setup


def test_scores_are_the_l1_norms_of_each_units_weight_row():
    ir, _ = setup("mlp")
    scores = magnitude_scores(ir)
    weight = dict(ir.gm.named_parameters())[ir.spaces["fc1"].weight]
    np.testing.assert_allclose(scores["fc1"], weight.detach().abs().sum(1).double().numpy())


def test_it_removes_the_longest_faithful_prefix_of_the_ranking_without_gradient_work():
    ir, scorer = setup("planted")
    result = run_search(MagnitudeSearch(), ir, scorer, KEEP, 60)
    assert scorer.gradient_work == 0 and result.stats["gradient_passes"] == 0
    assert result.stats["evaluations"] == scorer.evaluations <= 60
    assert result.changed and result.stats["groups_removed"] > 0
    assert exact(scorer, result.ir.kept) >= KEEP
    removed = set(result.ir.removed_groups())
    order = group_order(ir, magnitude_scores(ir), per_param=False)
    live = [g for g in order if not ir.groups[g].dead]
    assert set(live[: len(removed & set(live))]) == removed & set(live)  # a prefix
    assert len(result.trace) == result.stats["evaluations"]


def test_an_unreachable_keep_hands_the_start_back_unchanged():
    ir, scorer = setup("mlp")
    result = run_search(MagnitudeSearch(), ir, scorer, 1.5, 30)
    assert not result.changed and result.ir.removed_groups() == []


def test_it_is_a_registered_search_pass():
    assert parse_pipeline("magnitude,repair,minimize").passes[0] == MagnitudeSearch()
    assert MagnitudeSearch.kind == "search"
