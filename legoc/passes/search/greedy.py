"""`greedy`: attribution-ordered greedy elimination of dependency groups.

A first-order estimate ranks the groups by damage per parameter saved; a galloping then binary
search finds how long a prefix of that ranking can go at once while real ablation keeps
faithfulness >= keep. A group that cannot go even alone is set aside and the gallop goes on
with the rest. When the ranking is used up, a sweep re-tries every kept group alone; the search
stops when a whole sweep fails (the result is then 1-minimal) or when the budget of candidate
evaluations is spent (the best faithful set so far).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchContext, SearchPass, dead_groups
from legoc.passes.search.ranking import group_order


@dataclass(frozen=True)
class GreedySearch(SearchPass):
    name = "greedy"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        ctx = SearchContext(self, ir, pass_ctx)
        search = _Greedy(ctx, np.random.default_rng(ctx.seed))
        removed = search.run(set(ctx.start))
        return search.ctx.result(
            removed,
            faithfulness=search.faith,
            gradient_passes=search.gradient_passes,
            one_minimal=int(search.proven_minimal),
        )


class _Greedy:
    def __init__(self, ctx: SearchContext, rng: np.random.Generator):
        self.ctx, self.rng = ctx, rng
        self.ir, self.scorer = ctx.ir, ctx.scorer
        self.gradient_passes = 0
        self.faith: float | None = None
        self.proven_minimal = False

    def try_remove(self, removed: set[int], extra) -> bool:
        ok, value = self.ctx.evaluate(removed | set(extra))
        if ok:
            self.faith = value
        return ok

    def ranked(self, removed: set[int]) -> list[int] | None:
        """Kept removable groups, least damage per parameter first (ties broken by the seed);
        None when the budget does not cover the attribution pass and an evaluation."""
        scores = self.ctx.attribution(removed)
        if scores is None:
            return None
        self.gradient_passes += 1
        candidates = [g for g in self.ir.removable_groups() if g not in removed]
        self.rng.shuffle(candidates)
        return group_order(self.ir, scores, candidates=candidates)

    def run(self, removed: set[int]) -> set[int]:
        dead = dead_groups(self.ir) - removed
        if dead and self.ctx.budget_left() > 0 and self.try_remove(removed, dead):
            removed |= dead
        if removed:
            self.ctx.rebase(removed)
        blocked: set[int] = set()  # failed alone at some earlier state; re-tried by the sweep
        step = 1
        order = self.ranked(removed)
        while order is not None and self.ctx.budget_left() > 0:
            order = [g for g in order if g not in blocked and g not in removed]
            if not order:
                sweep_order = self.ranked(removed)
                accepted = None if sweep_order is None else self.sweep(removed, sweep_order)
                if accepted is None:
                    break
                if not accepted:
                    self.proven_minimal = True
                    break
                blocked.clear()
                self.ctx.rebase(removed)
                order = self.ranked(removed)
                continue
            taken = self.gallop(removed, order, start=step)
            step = max(1, taken // 2)
            if taken:
                removed |= set(order[:taken])
                self.ctx.rebase(removed)
                order = self.ranked(removed)
            else:
                blocked.add(order[0])
        return removed

    def gallop(self, removed: set[int], order: list[int], start: int = 1) -> int:
        """Largest k (0 if none) with order[:k] removable together: doubling from `start`
        (the last step's size: steps shrink slowly as the model shrinks), then bisection."""
        good, bad, k = 0, None, max(1, min(start, len(order)))
        while k <= len(order) and self.ctx.budget_left() > 0:
            if self.try_remove(removed, order[:k]):
                good, k = k, k * 2
            else:
                bad = k
                break
        if bad is None:
            if good == len(order) or self.ctx.budget_left() <= 0:
                return good
            if self.try_remove(removed, order):
                return len(order)
            bad = len(order)
        while bad - good > 1 and self.ctx.budget_left() > 0:
            mid = (good + bad) // 2
            if self.try_remove(removed, order[:mid]):
                good = mid
            else:
                bad = mid
        return good

    def sweep(self, removed: set[int], order: list[int]) -> int | None:
        """Try each group alone (ranked order), keeping every one that passes; count them.
        None when the budget ran out before the sweep finished."""
        accepted = 0
        for i, g in enumerate(order):
            if self.ctx.budget_left() <= 0:
                return None
            self.ctx.sweep(removed, order, i)
            if self.try_remove(removed, [g]):
                removed.add(g)
                accepted += 1
        return accepted
