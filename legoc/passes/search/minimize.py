"""`minimize`: make a faithful mask 1-minimal.

Removing any single kept group must drop faithfulness below keep; a group that can go is
removed, and sweeps repeat until one removes nothing (proven 1-minimal) or the budget is spent
(each sweep's attribution ranking is charged too: it must leave an evaluation to use it).
Runs after every search method, so no method returns a block with an obviously spare group.
"""

from __future__ import annotations

from dataclasses import dataclass

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchContext, SearchPass
from legoc.passes.search.ranking import group_order
from legoc.scoring.budget import GRADIENT_STEP_COST


@dataclass(frozen=True)
class Minimize(SearchPass):
    name = "minimize"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        """Precondition: `ir.kept` is faithful. Nothing to do (unchanged, no stats) when the
        kept set is proven 1-minimal or known unfaithful, or the budget cannot rank it."""
        verdict = pass_ctx.verdict(ir.kept)
        known_bad = verdict.faithfulness is not None and verdict.faithfulness < pass_ctx.keep
        if verdict.one_minimal or known_bad or not pass_ctx.budget.can_afford(GRADIENT_STEP_COST):
            return PassResult(ir, {}, changed=False)
        ctx = SearchContext(self, ir, pass_ctx)
        removed = set(ir.removed_groups())
        ctx.rebase(removed)
        removals, proven, faith = 0, False, None
        while (scores := ctx.attribution(removed)) is not None:
            kept = [g for g in ir.removable_groups() if g not in removed]
            changed = False
            order = group_order(ir, scores, candidates=kept)
            for i, g in enumerate(order):
                if ctx.budget_left() <= 0:
                    break
                ctx.sweep(removed, order, i)
                ok, value = ctx.evaluate(removed | {g})
                if ok:
                    removed.add(g)
                    removals, changed, faith = removals + 1, True, value
            else:
                if not changed:
                    proven = True
                    break
                ctx.rebase(removed)
                continue
            break
        return ctx.result(removed, faithfulness=faith, removals=removals, one_minimal=int(proven))
