"""`attribution`: one-shot first-order pruning.

One forward and one backward pass per batch estimate, for every unit, how much ablating it
would change the task loss (|sum over positions of (ablation value - activation) * gradient|,
averaged over rows); groups are ranked by that estimate per parameter saved, and the longest
faithful prefix of the ranking is removed (bisection on real ablation scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchContext, SearchPass, dead_groups
from legoc.passes.search.ranking import group_order, prune_prefix


@dataclass(frozen=True)
class AttributionSearch(SearchPass):
    name = "attribution"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        ctx = SearchContext(self, ir, pass_ctx)
        start = set(ctx.start) | dead_groups(ir)
        scores = ctx.attribution(start)
        if scores is None:  # the budget does not cover the gradient pass and one evaluation
            return ctx.result(set(ctx.start), faithfulness=None, gradient_passes=0)
        candidates = [g for g in ir.removable_groups() if g not in start]
        np.random.default_rng(ctx.seed).shuffle(candidates)  # the seed breaks ties only
        removed, faith = prune_prefix(ctx, group_order(ir, scores, candidates=candidates), start)
        if faith < ctx.keep:  # not even the start is faithful: hand it back unchanged
            removed, faith = set(ctx.start), None
        return ctx.result(removed, faithfulness=faith, gradient_passes=1)
