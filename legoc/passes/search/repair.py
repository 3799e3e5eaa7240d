"""`repair`: re-add the most important removed groups until faithfulness >= keep again.

Searches may end below `keep` on the exact masked model: a learned mask rounded to 0/1, or a
candidate accepted on a sliced scoring model whose float rounding flipped a borderline item.
Repair restores removed groups in order of their first-order importance on the full model,
taking the shortest prefix that is faithful (found by bisection on exact scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from legoc.ir.core import IR
from legoc.passes.base import PassResult

if TYPE_CHECKING:
    from legoc.scoring.scorer import Scorer


@dataclass(frozen=True)
class Repair:
    keep: float
    scorer: "Scorer" = field(default=None, compare=False, repr=False)
    name = "repair"

    def run(self, ir: IR) -> PassResult:
        """Precondition: `ir.kept` is the mask to repair; `ir.ablation` its values."""
        removed = ir.removed_groups()
        faith = self.scorer.faithfulness(
            ir.kept, count=False, exact=True
        )  # a check, not a candidate
        stats = {"groups_restored": 0, "faithfulness": faith, "evaluations": 0}
        if faith >= self.keep or not removed:
            return PassResult(ir, stats)
        full = ir.mask_for([])
        scores = self.scorer.attribution(full)
        importance = {g: sum(scores[s][u] for s, u in ir.groups[g].members) for g in removed}
        order = sorted(removed, key=lambda g: -importance[g])
        low, high = 0, len(order)  # restoring order[:high] gives the full model: faithful
        best = 1.0
        while high - low > 1:
            mid = (low + high) // 2
            trial = ir.mask_for(sorted(set(removed) - set(order[:mid])))
            value = self.scorer.faithfulness(trial, exact=True)
            stats["evaluations"] += 1
            if value >= self.keep:
                high, best = mid, value
            else:
                low = mid
        restored = ir.with_kept(ir.mask_for(sorted(set(removed) - set(order[:high]))))
        if high == len(order):
            best = self.scorer.faithfulness(restored.kept, exact=True)
            stats["evaluations"] += 1
        stats.update(groups_restored=high, faithfulness=best)
        return PassResult(restored, stats)
