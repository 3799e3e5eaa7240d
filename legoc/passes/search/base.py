"""What every search pass shares: the budget, the trace and the result of one run.

A search pass *decides*: it starts from the IR's kept set (the groups it already removes) and
returns the IR with a new kept set (removed groups ablated), stats counting what this run
removed and spent, and its trace. Every candidate it scores goes through
`SearchContext.evaluate`, which the context's one `Budget` counts and the trace records (size
and faithfulness).

The budget counts work in evaluations: candidate evaluations, plus the gradient steps a pass
takes (attribution, mask training) at their cost in forward passes (`legoc.scoring.budget`).
A pass checks `budget_left` (or `can_afford` before gradient work) so that its work stays
within the budget, and stops with the best faithful result it has when the budget is spent or
the deadline (`--time-limit`) has passed. A search scores masks on sliced stand-ins it asks
the scorer for (`rebase`) and hands them to each call: the scorer is left as it was found.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult, PreconditionFailed
from legoc.scoring.budget import GRADIENT_STEP_COST

if TYPE_CHECKING:
    from legoc.scoring.budget import Budget
    from legoc.scoring.scorer import StandIn


class SearchPass:
    """Mixin of the search passes: their kind and their precondition."""

    kind = "search"

    def check(self, ir: IR, ctx: PassContext) -> None:
        """Precondition: the context has a scorer and a budget."""
        if ctx.scorer is None or ctx.budget is None:
            raise PreconditionFailed(
                f"pass {self.name}: a search pass needs a scorer and a budget in its context"  # type: ignore[attr-defined]
            )


class SearchContext:
    """Budget, trace and scoring of one search run."""

    def __init__(self, search: SearchPass, ir: IR, ctx: PassContext):
        search.check(ir, ctx)
        self.name = search.name  # type: ignore[attr-defined]
        self.ir, self.pass_ctx, self.scorer = ir, ctx, ctx.scorer
        self.keep, self.seed = ctx.keep, ctx.seed
        self.budget: Budget = ctx.budget  # what this run may still spend
        self.meter: Budget = ctx.budget  # what it is counted against (its stats, its trace)
        self.first_evaluation = self.meter.evaluations
        self.first_work = self.meter.mark()
        self.started = time.perf_counter()
        self.start = frozenset(ir.removed_groups())  # what the IR removes already
        self.trace: list[dict] = []
        self.base: StandIn | None = None
        # candidates scored (shared with the passes this one runs): never pay for one twice
        self.seen: dict[frozenset[int], float] = ctx.memo

    @property
    def used(self) -> float:
        """Budget used by this run so far: evaluations plus gradient work, in evaluations."""
        return self.meter.used - self.first_work

    @property
    def evaluations(self) -> int:
        """Candidate evaluations counted by this run so far."""
        return self.meter.evaluations - self.first_evaluation

    def budget_left(self) -> int:
        """Whole evaluations the budget still allows; 0 once the deadline has passed."""
        return self.budget.left()

    def can_afford(self, work: float) -> bool:
        """Whether `work` (in evaluations) and one evaluation to use it fit in the budget."""
        return self.budget.can_afford(work)

    def time_up(self) -> bool:
        return self.budget.time_up()

    def within(self, budget: Budget) -> SearchContext:
        """This run with a capped budget (rollouts): same trace, memo and stand-in."""
        view = copy.copy(self)
        view.budget = budget
        return view

    def rebase(self, removed) -> None:
        """Score the masks that remove at least `removed` on the sliced model of `removed`."""
        self.base = self.scorer.stand_in(self.ir.mask_for(sorted(set(removed))))

    def attribution(self, removed) -> dict | None:
        """The scorer's first-order unit scores on the mask removing `removed`, when the budget
        allows an attribution pass and an evaluation after it; None otherwise."""
        if not self.can_afford(GRADIENT_STEP_COST):
            return None
        return self.scorer.attribution(self.ir.mask_for(sorted(set(removed))), base=self.base)

    def report(self, phase: str, done: int, total: int) -> None:
        if self.pass_ctx.progress is not None:
            self.pass_ctx.progress(phase, done, total)

    def cost(self, removed) -> int:
        """The objective (parameters or MACs per row) left with `removed` groups sliced away:
        what searches compare candidates by."""
        return self.ir.sliced_cost(self.ir.mask_for(sorted(set(removed))))

    def kept_params(self, removed) -> int:
        """The block's size with `removed` groups sliced away (before constants are folded)."""
        return self.ir.sliced_param_count(self.ir.mask_for(sorted(set(removed))))

    def ahead(self, candidates) -> None:
        """Submit the candidates the search scores next, if none is accepted, together: a
        remote backend (`--ray`) scores one per worker at once; locally nothing happens. Only
        `evaluate` counts them, when the search asks, so the result is a local run's."""
        width = min(self.scorer.width, self.budget_left())
        if width <= 0:
            return
        fresh = []
        for removed in candidates:
            key = frozenset(removed)
            if key not in self.seen and key not in fresh:
                fresh.append(key)
            if len(fresh) == width:
                break
        masks = [self.ir.mask_for(sorted(key)) for key in fresh]
        self.scorer.prefetch(masks, self.keep, self.base)

    def sweep(self, removed: set, order: list[int], index: int) -> None:
        """Before scoring `removed` + order[index] alone: submit it and the next ones together
        unless it is waiting already (one-at-a-time removals: greedy's and minimize's sweeps)."""
        key = frozenset(removed | {order[index]})
        if not self.scorer.width or key in self.seen:
            return
        if not self.scorer.prefetched(self.ir.mask_for(sorted(key)), self.keep, self.base):
            self.ahead(removed | {g} for g in order[index:])

    def evaluate(self, removed) -> tuple[bool, float]:
        """Score the mask with `removed` groups ablated; stops early when keep is out of reach.
        A candidate scored before returns its earlier verdict without counting again."""
        key = frozenset(removed)
        if key in self.seen:
            return self.seen[key] >= self.keep, self.seen[key]
        removed = sorted(key)
        value = self.scorer.faithfulness(self.ir.mask_for(removed), keep=self.keep, base=self.base)
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
        self.report(self.name, int(self.meter.used), int(self.meter.limit))
        return ok, value

    def absorb(self, inner: list[dict], offset: int) -> None:
        """Append an inner search's trace, renumbered to this search's evaluations."""
        for row in inner:
            self.trace.append({**row, "evaluation": row["evaluation"] + offset})

    def faithfulness_of(self, removed) -> float:
        """Faithfulness without counting it as a candidate (for reporting)."""
        return self.scorer.faithfulness(
            self.ir.mask_for(sorted(set(removed))), count=False, base=self.base
        )

    def result(self, removed, **stats) -> PassResult:
        """The IR with `removed` groups ablated; `stats` count this run's removals and work.
        `one_minimal` (when given) and the faithfulness go into the context's verdicts."""
        removed = sorted(set(removed))
        kept = self.ir.mask_for(removed)
        ir = self.ir.with_kept(kept)
        ir.ablation = {k: v.clone() for k, v in self.scorer.values.items()}
        faith = stats.pop("faithfulness", None)
        if faith is None:
            faith = self.faithfulness_of(removed)
        newly = set(removed) - self.start
        base = {
            "evaluations": self.evaluations,
            "budget_used": round(self.used, 3),
            "groups_removed": len(newly),
            "units_removed": int(sum(len(self.ir.groups[g].members) for g in newly)),
            "faithfulness": faith,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        facts = {"faithfulness": faith, "exact": False}
        if "one_minimal" in stats:
            facts["one_minimal"] = bool(stats["one_minimal"])
        self.pass_ctx.note(kept, **facts)
        changed = set(removed) != self.start
        return PassResult(ir, {**base, **stats}, changed=changed, trace=self.trace)


def dead_groups(ir: IR) -> set[int]:
    """Removable groups nobody reads: removing them changes nothing."""
    return {g for g in ir.removable_groups() if ir.groups[g].dead}
