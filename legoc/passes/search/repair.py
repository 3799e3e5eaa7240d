"""`repair`: re-add the most important removed groups until faithfulness >= keep again.

Searches may end below `keep` on the exact masked model: a learned mask rounded to 0/1, or a
candidate accepted on a sliced stand-in whose float rounding flipped a borderline item.
Repair restores removed groups in order of their first-order importance on the full model,
taking the shortest prefix that is faithful (found by bisection on exact scores). Its
evaluations are counted by the budget but not bounded by it: a block must meet keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchPass


@dataclass(frozen=True)
class Repair(SearchPass):
    name = "repair"

    def run(self, ir: IR, ctx: PassContext) -> PassResult:
        """Precondition: `ir.kept` is the mask to repair; `ir.ablation` its values."""
        self.check(ir, ctx)
        scorer, keep = ctx.scorer, ctx.keep
        removed = ir.removed_groups()
        faith = scorer.faithfulness(ir.kept, count=False, exact=True)  # a check, not a candidate
        ctx.note(ir.kept, faithfulness=faith, exact=True)
        stats = {"groups_restored": 0, "faithfulness": faith, "evaluations": 0}
        if faith >= keep or not removed:
            return PassResult(ir, stats, changed=False)
        full = ir.mask_for([])
        scores = scorer.attribution(full)
        importance = {g: sum(scores[s][u] for s, u in ir.groups[g].members) for g in removed}
        order = sorted(removed, key=lambda g: -importance[g])
        low, high = 0, len(order)  # restoring order[:high] gives the full model: faithful
        best = 1.0
        while high - low > 1:
            mid = (low + high) // 2
            trial = ir.mask_for(sorted(set(removed) - set(order[:mid])))
            value = scorer.faithfulness(trial, exact=True)
            stats["evaluations"] += 1
            if value >= keep:
                high, best = mid, value
            else:
                low = mid
        restored = ir.with_kept(ir.mask_for(sorted(set(removed) - set(order[:high]))))
        if high == len(order):
            best = scorer.faithfulness(restored.kept, exact=True)
            stats["evaluations"] += 1
        stats.update(groups_restored=high, faithfulness=best)
        ctx.note(restored.kept, faithfulness=best, exact=True)
        return PassResult(restored, stats, changed=True)
