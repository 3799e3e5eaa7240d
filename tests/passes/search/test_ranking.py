"""`prune_prefix` (the longest faithful prefix of a ranking, by bisection) and `group_order`
(least important groups first), on hand-made contexts and groups with known answers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from legoc.passes.search.ranking import first_prefix_below, group_order, prune_prefix


class Monotone:
    """A stand-in SearchContext: a candidate is faithful while it removes at most `most`
    groups; faithfulness falls by 0.01 per removed group. Counts and records evaluations."""

    def __init__(self, most: int, budget: int = 1000):
        self.most, self.budget = most, budget
        self.evaluated: list[set[int]] = []
        self.uncounted = 0

    def value(self, removed) -> float:
        return 1.0 - 0.01 * len(set(removed))

    def budget_left(self) -> int:
        return self.budget - len(self.evaluated)

    def evaluate(self, removed) -> tuple[bool, float]:
        self.evaluated.append(set(removed))
        return len(set(removed)) <= self.most, self.value(removed)

    def faithfulness_of(self, removed) -> float:
        self.uncounted += 1
        return self.value(removed)


ORDER = list(range(100, 116))  # 16 groups, ranked


@pytest.mark.parametrize("most", range(len(ORDER) + 1))
def test_finds_the_largest_faithful_prefix_in_log_evaluations(most):
    ctx = Monotone(most)
    removed, faith = prune_prefix(ctx, ORDER)
    assert removed == set(ORDER[:most])
    assert faith == pytest.approx(1.0 - 0.01 * most, abs=1e-12)
    # the whole ranking first; when that fails, a bisection over 0..15 (4 halvings)
    expected = 1 if most == len(ORDER) else 1 + math.ceil(math.log2(len(ORDER)))
    assert len(ctx.evaluated) == expected
    assert all(set(c) <= set(ORDER) for c in ctx.evaluated)


@pytest.mark.parametrize("most", [2, 3, 5, 7])
def test_extends_the_removed_set_it_is_given(most):
    start = {1, 2}
    ctx = Monotone(most)
    removed, faith = prune_prefix(ctx, ORDER[:8], removed=frozenset(start))
    assert removed == start | set(ORDER[: most - len(start)])
    assert faith == pytest.approx(ctx.value(removed), abs=1e-12)
    assert all(start <= c for c in ctx.evaluated)  # every candidate keeps the start removed
    assert len(ctx.evaluated) <= 1 + math.ceil(math.log2(8))


def test_returns_the_start_set_when_nothing_can_go():
    start = {1, 2, 3}
    ctx = Monotone(most=len(start))
    removed, faith = prune_prefix(ctx, ORDER, removed=frozenset(start))
    assert removed == start
    assert faith == pytest.approx(ctx.value(start), abs=1e-12)
    assert ctx.uncounted == 1  # the start's faithfulness, measured without counting


@pytest.mark.parametrize("budget", [0, 1, 2, 3])
def test_respects_the_budget_and_returns_only_a_verified_set(budget):
    ctx = Monotone(most=9, budget=budget)
    removed, faith = prune_prefix(ctx, ORDER)
    assert len(ctx.evaluated) <= budget
    accepted = [c for c in ctx.evaluated if len(c) <= ctx.most]
    assert removed == set() or removed in accepted  # never an unscored cut
    assert len(removed) <= 9
    assert faith == pytest.approx(ctx.value(removed), abs=1e-12)


def test_an_empty_ranking_returns_the_start():
    ctx = Monotone(most=2)
    removed, faith = prune_prefix(ctx, [], removed=frozenset({4}))
    assert removed == {4}
    assert faith == pytest.approx(ctx.value({4}), abs=1e-12)
    assert len(ctx.evaluated) <= 1


# -- group_order ---------------------------------------------------------------------------
@dataclass
class Group:
    index: int
    members: list[tuple[str, int]]
    params: int
    frozen: str | None = None


@dataclass
class Groups:
    """A stand-in IR: just the groups `group_order` reads."""

    groups: list[Group] = field(default_factory=list)

    def removable_groups(self) -> list[int]:
        return [g.index for g in self.groups if g.frozen is None]

    def group_cost(self, group: int) -> int:  # the params objective, as IR.group_cost
        return max(self.groups[group].params, 1)


SCORES = {"a": np.array([1.0, 2.0, 0.5, 4.0]), "b": np.array([3.0, 0.0, 6.0])}
IR = Groups(
    [
        Group(0, [("a", 0), ("a", 1)], params=6),  # 3.0 in all, 0.5 per parameter
        Group(1, [("a", 2)], params=1),  # 0.5, 0.5 per parameter (ties with 0)
        Group(2, [("a", 3), ("b", 0)], params=2),  # 7.0, 3.5 per parameter
        Group(3, [("b", 1)], params=0),  # 0.0 (no parameters: counted as one)
        Group(4, [("b", 2)], params=12),  # 6.0, 0.5 per parameter (ties with 0 and 1)
        Group(5, [("a", 0)], params=1, frozen="reaches the model output"),
    ]
)


def test_groups_sort_by_summed_scores_per_parameter_ties_by_index():
    assert group_order(IR, SCORES) == [3, 0, 1, 4, 2]  # frozen group 5 is not a candidate


def test_groups_sort_by_summed_scores_without_per_parameter():
    assert group_order(IR, SCORES, per_param=False) == [3, 1, 0, 4, 2]


def test_only_the_candidates_given_are_ordered():
    assert group_order(IR, SCORES, candidates=[4, 2, 0]) == [0, 4, 2]
    assert group_order(IR, SCORES, candidates=[]) == []


def test_the_candidates_order_never_decides():
    for candidates in ([0, 1, 4], [4, 1, 0], [1, 4, 0]):
        assert group_order(IR, SCORES, candidates=candidates) == [0, 1, 4]


class Costed(Monotone):
    """Monotone, plus a cost: 10 per group left of 100 groups (removed ones cost nothing)."""

    def cost(self, removed) -> int:
        return 10 * (100 - len(set(removed)))


@pytest.mark.parametrize("cost, expected", [(1000, 1), (995, 1), (990, 2), (850, 16), (840, None)])
def test_first_prefix_below_a_cost(cost, expected):
    # removing k groups of ORDER (plus none before) leaves 10 * (100 - k)
    assert first_prefix_below(Costed(5), ORDER, set(), cost) == expected


def test_a_known_faithful_floor_is_not_evaluated_again():
    ctx = Monotone(9)
    removed, _faith = prune_prefix(ctx, ORDER, floor=6, floor_faith=0.94)
    assert removed == set(ORDER[:9])
    assert all(len(c) > 6 for c in ctx.evaluated)  # never below the floor
    assert len(ctx.evaluated) <= 1 + math.ceil(math.log2(len(ORDER) - 6))
