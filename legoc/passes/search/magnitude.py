"""`magnitude`: one-shot structural pruning by weight magnitude, the simplest peer method.

Each unit is scored by the L1 norm of its weight row in its producer (Li et al. 2017, no
normalisation), a group by the sum over its units; groups are ranked least important first
and the longest faithful prefix is removed (bisection on real ablation, `prune_prefix`). No
gradient work: the ranking costs nothing, so the whole budget goes to the bisection. It is the
floor DESIGN §4 measures legoc's methods against (benchmarks/search.py runs it as this pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchContext, SearchPass, dead_groups
from legoc.passes.search.ranking import group_order, prune_prefix


def magnitude_scores(ir: IR) -> dict[str, np.ndarray]:
    """L1 norm of each unit's weight row in its producer, per prunable module."""
    scores = {}
    for name, space in ir.spaces.items():
        weight = get_attr_tensor(ir.gm, space.weight).detach()
        if space.kind == "embedding":  # a unit is a column of the table
            weight = weight.t()
        scores[name] = weight.reshape(weight.shape[0], -1).abs().sum(1).double().numpy()
    return scores


@dataclass(frozen=True)
class MagnitudeSearch(SearchPass):
    per_param: bool = False  # rank by norm per parameter saved (False: the plain norm)
    name = "magnitude"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        ctx = SearchContext(self, ir, pass_ctx)
        start = set(ctx.start) | dead_groups(ir)
        candidates = [g for g in ir.removable_groups() if g not in start]
        order = group_order(
            ir, magnitude_scores(ir), per_param=self.per_param, candidates=candidates
        )
        removed, faith = prune_prefix(ctx, order, start)
        if faith < ctx.keep:  # not even the start is faithful: hand it back unchanged
            removed, faith = set(ctx.start), None
        return ctx.result(removed, faithfulness=faith, gradient_passes=0)
