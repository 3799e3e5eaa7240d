"""`greedy`: attribution-ordered greedy elimination of dependency groups.

A first-order estimate ranks the groups by damage per parameter saved; a galloping then binary
search finds how long a prefix of that ranking can go at once while real ablation keeps
faithfulness >= keep. A group that cannot go even alone is set aside and the gallop goes on
with the rest. When the ranking is used up, a sweep re-tries every kept group alone; the search
stops when a whole sweep fails (the result is then 1-minimal) or when the budget of candidate
evaluations is spent (the best faithful set so far).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from legoc.ir import IR
from legoc.passes.base import PassResult

if TYPE_CHECKING:
    from legoc.scoring import Scorer

log = logging.getLogger(__name__)


@dataclass
class SearchTrace:
    """Every candidate scored: size and faithfulness, for reports and Pareto plots."""

    rows: list[dict] = field(default_factory=list)

    def add(self, evaluation: int, removed: int, params: int, faith: float, accepted: bool) -> None:
        self.rows.append(
            {
                "evaluation": evaluation,
                "groups_removed": removed,
                "kept_params": params,
                "faithfulness": faith,
                "accepted": accepted,
            }
        )


@dataclass(frozen=True)
class GreedySearch:
    keep: float
    budget: int
    seed: int = 0
    scorer: "Scorer" = field(default=None, compare=False, repr=False)
    progress: object = field(default=None, compare=False, repr=False)
    name = "greedy"

    def run(self, ir: IR) -> PassResult:
        started = time.perf_counter()
        search = _Greedy(self, ir)
        removed = search.run()
        result_ir = ir.with_kept(ir.mask_for(sorted(removed)))
        result_ir.ablation = {k: v.clone() for k, v in self.scorer.values.items()}
        stats = {
            "evaluations": self.scorer.evaluations - search.start_evals,
            "gradient_passes": search.gradient_passes,
            "groups_removed": len(removed),
            "units_removed": int(sum(len(ir.groups[g].members) for g in removed)),
            "faithfulness": search.best_faith,
            "one_minimal": int(search.proven_minimal),
            "seconds": round(time.perf_counter() - started, 3),
        }
        result = PassResult(result_ir, stats)
        result.trace = search.trace  # type: ignore[attr-defined]
        return result


class _Greedy:
    def __init__(self, options: GreedySearch, ir: IR):
        self.o, self.ir, self.scorer = options, ir, options.scorer
        self.start_evals = self.scorer.evaluations
        self.rng = np.random.default_rng(options.seed)
        self.removable = ir.removable_groups()
        self.params = {g.index: max(g.params, 1) for g in ir.groups}
        self.source_params = ir.param_count()
        self.trace = SearchTrace()
        self.gradient_passes = 0
        self.best_faith = 1.0
        self.proven_minimal = False

    def budget_left(self) -> int:
        return self.o.budget - (self.scorer.evaluations - self.start_evals)

    def kept_params(self, removed: set[int]) -> int:
        return self.source_params - sum(self.params[g] for g in removed)

    def try_remove(self, removed: set[int], extra: list[int]) -> bool:
        candidate = removed | set(extra)
        faith = self.scorer.faithfulness(self.ir.mask_for(candidate), keep=self.o.keep)
        ok = faith >= self.o.keep
        self.trace.add(
            self.scorer.evaluations, len(candidate), self.kept_params(candidate), faith, ok
        )
        if self.o.progress is not None:
            self.o.progress(self.scorer.evaluations - self.start_evals, self.o.budget)
        if ok:
            self.best_faith = faith
        return ok

    def ranked(self, removed: set[int]) -> list[int]:
        scores = self.scorer.attribution(self.ir.mask_for(removed))
        self.gradient_passes += 1
        candidates = [g for g in self.removable if g not in removed]
        jitter = self.rng.random(len(candidates)) * 1e-12
        cost = [
            sum(scores[space][unit] for space, unit in self.ir.groups[g].members) / self.params[g]
            + j
            for g, j in zip(candidates, jitter)
        ]
        return [candidates[i] for i in np.argsort(cost, kind="stable")]

    def run(self) -> set[int]:
        dead = {g for g in self.removable if self.ir.groups[g].dead}
        removed: set[int] = set()
        if self.budget_left() > 0 and self.try_remove(removed, sorted(dead)):
            removed |= dead
            self.scorer.rebase(self.ir.mask_for(removed))
        elif self.budget_left() > 0:
            self.best_faith = self.scorer.faithfulness(self.ir.mask_for(removed))
        blocked: set[int] = set()  # failed alone at some earlier state; re-tried by the sweep
        step = 1
        order = self.ranked(removed)
        while self.budget_left() > 0:
            order = [g for g in order if g not in blocked and g not in removed]
            if not order:
                accepted = self.sweep(removed, [g for g in self.ranked(removed)])
                if accepted is None:
                    break
                if not accepted:
                    self.proven_minimal = True
                    break
                blocked.clear()
                self.scorer.rebase(self.ir.mask_for(removed))
                order = self.ranked(removed)
                continue
            taken = self.gallop(removed, order, start=step)
            step = max(1, taken // 2)
            if taken:
                removed |= set(order[:taken])
                self.scorer.rebase(self.ir.mask_for(removed))
                order = self.ranked(removed)
            else:
                blocked.add(order[0])
        return removed

    def gallop(self, removed: set[int], order: list[int], start: int = 1) -> int:
        """Largest k (0 if none) with order[:k] removable together: doubling from `start`
        (the last step's size: steps shrink slowly as the model shrinks), then bisection."""
        good, bad, k = 0, None, max(1, min(start, len(order)))
        while k <= len(order) and self.budget_left() > 0:
            if self.try_remove(removed, order[:k]):
                good, k = k, k * 2
            else:
                bad = k
                break
        if bad is None:
            if good == len(order) or self.budget_left() <= 0:
                return good
            if self.try_remove(removed, order):
                return len(order)
            bad = len(order)
        while bad - good > 1 and self.budget_left() > 0:
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
        for g in order:
            if self.budget_left() <= 0:
                return None
            if self.try_remove(removed, [g]):
                removed.add(g)
                accepted += 1
        return accepted
