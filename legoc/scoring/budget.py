"""The search budget: what a pipeline's work is counted in, and the only place it is reckoned.

The unit is one candidate evaluation: a forward pass over the whole search split. Gradient work
is charged in the same unit, so `search.budget` bounds all of a pipeline's work: a forward +
backward step over b of the split's N rows costs about three forwards of those rows (the
backward pass is about twice the forward), i.e. GRADIENT_STEP_COST * b / N evaluations. An
attribution pass (every row once) is charged GRADIENT_STEP_COST evaluations; a mask-training
step over 64 of shapes' 600 rows, 0.32.

The scorer counts the work it does (`Scorer.evaluations`, `Scorer.gradient_work`); a `Budget`
is a window on those counts with a limit and an optional deadline. One budget spans a whole
pipeline; a pass that caps a helper's share (mcts's first cut, its rollouts) takes a `share`
of it, which counts against the parent too.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

GRADIENT_STEP_COST = 3.0


def gradient_cost(rows: int, split_rows: int) -> float:
    """Evaluations-worth of one forward + backward step over `rows` of `split_rows` rows."""
    return GRADIENT_STEP_COST * rows / max(split_rows, 1)


class Counter(Protocol):
    """What a budget reads: the work done so far (a Scorer)."""

    evaluations: int
    gradient_work: float


class Budget:
    """The work a pipeline may do, in evaluations, and what it has done since it began."""

    def __init__(
        self,
        limit: float,
        counter: Counter,
        deadline: float | None = None,
        parent: Budget | None = None,
        evaluation_cap: int | None = None,
    ):
        """`deadline`: time.monotonic() at which the work must stop (--time-limit).
        `evaluation_cap`: at most this many candidate evaluations (gradient work aside)."""
        self.limit, self.counter, self.deadline, self.parent = limit, counter, deadline, parent
        self.evaluation_cap = evaluation_cap
        self.first_evaluations = counter.evaluations
        self.first_gradient = counter.gradient_work
        self.timed_out = False

    @classmethod
    def unlimited(cls, counter: Counter) -> Budget:
        return cls(math.inf, counter)

    @property
    def evaluations(self) -> int:
        """Candidate evaluations counted since the budget began."""
        return self.counter.evaluations - self.first_evaluations

    @property
    def gradient(self) -> float:
        """Gradient work charged since the budget began, in evaluations."""
        return self.counter.gradient_work - self.first_gradient

    @property
    def used(self) -> float:
        """Budget used so far: evaluations plus gradient work, in evaluations."""
        return self.evaluations + self.gradient

    @property
    def until(self) -> float | None:
        """The deadline that applies (this budget's, else its parent's)."""
        if self.deadline is not None or self.parent is None:
            return self.deadline
        return self.parent.until

    def time_up(self) -> bool:
        """Whether the deadline (this budget's or its parent's) has passed; sticky."""
        if self.parent is not None and self.parent.time_up():
            self.timed_out = True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out

    def left(self) -> int:
        """Whole evaluations the budget still allows; 0 once the deadline has passed."""
        if self.time_up():
            return 0
        left = self.limit - self.used
        if self.evaluation_cap is not None:
            left = min(left, self.evaluation_cap - self.evaluations)
        left = max(0, math.floor(left + 1e-9)) if math.isfinite(left) else left
        return left if self.parent is None else min(left, self.parent.left())

    def can_afford(self, work: float) -> bool:
        """Whether `work` (in evaluations) and one evaluation to use it fit in the budget."""
        return self.left() >= work + 1

    def share(self, limit: float | None = None, evaluations: int | None = None) -> Budget:
        """A budget for a helper: at most `limit` work and `evaluations` candidate evaluations
        from now on, and never more than this budget has left."""
        return Budget(
            math.inf if limit is None else limit,
            self.counter,
            parent=self,
            evaluation_cap=evaluations,
        )

    def mark(self) -> float:
        """The work used so far: a pass's own share is `used - mark` later on."""
        return self.used

    def steps_within(self, share: float, step_cost: float, at_most: int) -> int:
        """Steps of `step_cost` that fit in `share` of what is left (at most `at_most`)."""
        return max(0, min(at_most, int(share * self.left() / step_cost)))

    def report(self) -> dict:
        """The work charged, as `Found.budget` and the summary show it."""
        return {
            "limit": self.limit,
            "used": round(self.used, 3),
            "evaluations": self.evaluations,
            "gradient": round(self.gradient, 3),
        }
