"""What every search pass shares: its options, the budget, the trace and the result.

A search pass *decides*: it returns the IR with a kept mask (removed groups ablated) and stats
counting candidate evaluations. Every candidate it scores goes through `SearchContext.evaluate`,
which counts it against the budget and records it in the trace (size and faithfulness).

The budget counts work in evaluations: candidate evaluations, plus the gradient steps a pass
takes (attribution, mask training) at their cost in forward passes (`legoc.scoring.
gradient_cost`). A pass checks `budget_left` (or `can_afford` before gradient work) so that
its work stays within its budget, and stops with the best faithful result it has when the
budget is spent or the scorer's deadline (`--time-limit`) has passed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from legoc.ir.core import IR
from legoc.passes.base import PassResult
from legoc.scoring.scorer import GRADIENT_STEP_COST

if TYPE_CHECKING:
    from legoc.scoring.scorer import Scorer

# (phase, done, total): a pass reports its name with the budget it has used (evaluations) of
# its budget; mask training reports "mask training" with gradient steps taken of those planned
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SearchOptions:
    """Fields common to the search passes (the subclasses add their own)."""

    keep: float
    budget: int
    seed: int = 0
    scorer: "Scorer" = field(default=None, compare=False, repr=False)
    progress: Progress | None = field(default=None, compare=False, repr=False)
    start: frozenset[int] = frozenset()  # groups already removed (a faithful starting point)
    memo: dict | None = field(default=None, compare=False, repr=False)  # shared verdicts


class SearchContext:
    """Budget, trace and scoring of one search run."""

    def __init__(self, options: SearchOptions, ir: IR):
        self.options, self.ir, self.scorer = options, ir, options.scorer
        self.keep = options.keep
        self.first_evaluation = self.scorer.evaluations
        self.first_work = self.scorer.work
        self.started = time.perf_counter()
        self.source_params = ir.param_count()
        self.trace: list[dict] = []
        self.best_faith: float | None = None
        # candidates scored (shared with an outer search): never pay for one twice
        self.seen: dict[frozenset[int], float] = options.memo if options.memo is not None else {}

    @property
    def used(self) -> float:
        """Budget used so far: evaluations plus gradient work, in evaluations."""
        return self.scorer.work - self.first_work

    @property
    def evaluations(self) -> int:
        """Candidate evaluations counted so far."""
        return self.scorer.evaluations - self.first_evaluation

    def budget_left(self) -> int:
        """Whole evaluations the budget still allows; 0 once the deadline has passed."""
        if self.scorer.time_up():
            return 0
        return max(0, math.floor(self.options.budget - self.used + 1e-9))

    def can_afford(self, work: float) -> bool:
        """Whether `work` (in evaluations) and one evaluation to use it fit in the budget."""
        return self.budget_left() >= work + 1

    def attribution(self, removed) -> dict | None:
        """The scorer's first-order unit scores on the mask removing `removed`, when the budget
        allows an attribution pass and an evaluation after it; None otherwise."""
        if not self.can_afford(GRADIENT_STEP_COST):
            return None
        return self.scorer.attribution(self.ir.mask_for(sorted(set(removed))))

    def report(self, phase: str, done: int, total: int) -> None:
        if self.options.progress is not None:
            self.options.progress(phase, done, total)

    def cost(self, removed) -> int:
        """The objective (parameters or MACs per row) left with `removed` groups sliced away:
        what searches compare candidates by."""
        return self.ir.sliced_cost(self.ir.mask_for(sorted(set(removed))))

    def kept_params(self, removed) -> int:
        """The block's size with `removed` groups sliced away (before constants are folded)."""
        return self.ir.sliced_param_count(self.ir.mask_for(sorted(set(removed))))

    def evaluate(self, removed) -> tuple[bool, float]:
        """Score the mask with `removed` groups ablated; stops early when keep is out of reach.
        A candidate scored before returns its earlier verdict without counting again."""
        key = frozenset(removed)
        if key in self.seen:
            return self.seen[key] >= self.keep, self.seen[key]
        removed = sorted(key)
        value = self.scorer.faithfulness(self.ir.mask_for(removed), keep=self.keep)
        self.seen[key] = value
        ok = value >= self.keep
        self.trace.append(
            {
                "evaluation": self.evaluations,
                "groups_removed": len(removed),
                "kept_params": self.kept_params(removed),
                "faithfulness": value,
                "stopped_early": self.scorer.last_stopped_early,
                "accepted": ok,
            }
        )
        self.report(self.options.name, int(self.used), self.options.budget)
        return ok, value

    def absorb(self, inner: list[dict], offset: int) -> None:
        """Append an inner search's trace, renumbered to this search's evaluations."""
        for row in inner:
            self.trace.append({**row, "evaluation": row["evaluation"] + offset})

    def faithfulness_of(self, removed) -> float:
        """Exact faithfulness without counting it as a candidate (for reporting)."""
        return self.scorer.faithfulness(self.ir.mask_for(sorted(set(removed))), count=False)

    def result(self, removed, **stats) -> PassResult:
        removed = sorted(set(removed))
        ir = self.ir.with_kept(self.ir.mask_for(removed))
        ir.ablation = {k: v.clone() for k, v in self.scorer.values.items()}
        faith = stats.pop("faithfulness", None)
        if faith is None:
            faith = self.faithfulness_of(removed)
        base = {
            "evaluations": self.evaluations,
            "budget_used": round(self.used, 3),
            "groups_removed": len(removed),
            "units_removed": int(sum(len(self.ir.groups[g].members) for g in removed)),
            "faithfulness": faith,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        result = PassResult(ir, {**base, **stats})
        result.trace = self.trace  # type: ignore[attr-defined]
        return result


def dead_groups(ir: IR) -> set[int]:
    """Removable groups nobody reads: removing them changes nothing."""
    return {g for g in ir.removable_groups() if ir.groups[g].dead}
