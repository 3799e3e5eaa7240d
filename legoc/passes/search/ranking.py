"""Pruning along a fixed ranking: the longest prefix of least-important groups that stays
faithful, found by bisection on real ablation scores.

This is what one-shot structural pruning does (rank once by an importance score, cut at the
largest ratio that still meets the target); legoc's `attribution` method, the `mask` method's
threshold search and the benchmark's baselines (magnitude, Taylor, random) differ only in the
ranking they pass in.
"""

from __future__ import annotations

from legoc.ir.core import IR
from legoc.passes.search.base import SearchContext


def prune_prefix(
    ctx: SearchContext,
    order: list[int],
    removed=frozenset(),
    floor: int = 0,
    floor_faith: float | None = None,
) -> tuple[set, float]:
    """Largest k with `removed` + order[:k] faithful, by bisection (assuming monotonicity, as
    one-shot pruning does). `floor`: a prefix length already known faithful (with
    `floor_faith`). Returns the removed set and its faithfulness."""
    removed = set(removed)
    good, bad, good_faith = floor, len(order) + 1, floor_faith
    if ctx.budget_left() > 0:
        ok, value = ctx.evaluate(removed | set(order))
        if ok:
            return removed | set(order), value
        bad = len(order)
    while bad - good > 1 and ctx.budget_left() > 0:
        mid = (good + bad) // 2
        ok, value = ctx.evaluate(removed | set(order[:mid]))
        if ok:
            good, good_faith = mid, value
        else:
            bad = mid
    chosen = removed | set(order[:good])
    return chosen, good_faith if good_faith is not None else ctx.faithfulness_of(chosen)


def first_prefix_below(ctx: SearchContext, order: list[int], removed, cost: float) -> int | None:
    """Shortest k whose removal `removed` + order[:k] leaves less than `cost` (None if even the
    whole order does not): the cost only falls as k grows, so this is a bisection."""
    removed = set(removed)
    if ctx.cost(removed | set(order)) >= cost:
        return None
    lo, hi = -1, len(order)  # cost(lo) >= cost (or lo = -1), cost(hi) < cost
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ctx.cost(removed | set(order[:mid])) < cost:
            hi = mid
        else:
            lo = mid
    return hi


def group_order(ir: IR, unit_scores: dict, per_param: bool = True, candidates=None) -> list[int]:
    """Groups from least to most important by summed unit scores (per parameter saved)."""
    groups = ir.removable_groups() if candidates is None else list(candidates)

    def cost(g: int) -> float:
        members = ir.groups[g].members
        total = float(sum(unit_scores[space][unit] for space, unit in members))
        return total / ir.group_cost(g) if per_param else total

    return sorted(groups, key=lambda g: (cost(g), g))
