"""`round-widths`: under `--objective macs`, spend the channels alignment pays for anyway.

`align-channels` stores each conv width rounded up to a multiple of 16, so a 1-minimal block
with 33 residual channels runs at the cost of 48: measured on the shapes example, the `macs`
block's MACs went from 0.29x to 0.60x the source's at export. This pass compares candidates
at stored widths (`IR.sliced_macs(kept, multiple)`) and, for each conv width above a multiple,
tries to drop it to the multiple below while *filling* every other width's slack with the
most useful removed units (free: they sit where zero channels would). A filled unit often
carries what the dropped ones did. The minimize pass that follows trims fills that are not
needed, so the block ends 1-minimal again (when the budget allows).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.align_channels import DEFAULT_MULTIPLE
from legoc.passes.search.base import SearchContext, SearchPass


@dataclass(frozen=True)
class RoundWidths(SearchPass):
    multiple: int = DEFAULT_MULTIPLE
    name = "round-widths"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        """Precondition: `ir.kept` is faithful. Accepts a width only when it reaches the
        multiple below with every step faithful and the stored MACs fall. Nothing to do
        (unchanged, no stats) unless the objective is macs and `multiple` > 1, the kept set
        is not known unfaithful and the budget has something left."""
        verdict = pass_ctx.verdict(ir.kept)
        known_bad = verdict.faithfulness is not None and verdict.faithfulness < pass_ctx.keep
        applies = ir.objective == "macs" and self.multiple > 1
        if not applies or known_bad or pass_ctx.budget.left() <= 0:
            return PassResult(ir, {}, changed=False)
        ctx = SearchContext(self, ir, pass_ctx)
        removed = set(ir.removed_groups())
        ctx.rebase(removed)
        before = cost = self._stored(ir, removed)
        dropped = 0
        while (plans := self._plans(ctx, removed, cost)) is not None:
            for space, lower, filled in plans:
                if ctx.budget_left() <= 0 or (filled != removed and not ctx.evaluate(filled)[0]):
                    continue  # restoring units can hurt too
                narrowed = self._narrow(ctx, filled, space, lower)
                narrowed_cost = None if narrowed is None else self._stored(ir, narrowed)
                if narrowed_cost is not None and narrowed_cost < cost:
                    removed, cost, dropped = narrowed, narrowed_cost, dropped + 1
                    break
            else:
                break  # no width could drop: done
        stats = dict(widths_dropped=dropped, stored_macs_before=before, stored_macs_after=cost)
        if not dropped:  # the kept set stands as it was (and what is known of it)
            result = ctx.result(ctx.start, **stats)
            return PassResult(ir, result.stats, changed=False, trace=result.trace)
        return ctx.result(removed, **stats)

    def _stored(self, ir: IR, removed) -> int:
        return ir.sliced_macs(ir.mask_for(sorted(removed)), self.multiple)

    def _plans(
        self, ctx: SearchContext, removed: set, cost: int
    ) -> list[tuple[str, int, set]] | None:
        """(space, target width, start) per conv width above a multiple, the largest saving
        first: the start is `removed` with every other width's slack filled. None when the
        budget does not cover ranking the fills."""
        ir = ctx.ir
        fill_scores = ctx.attribution(removed - set(_fill_options(ir, removed, self.multiple, ())))
        if fill_scores is None:
            return None
        plans, seen = [], set()
        for space, width in _kept_widths(ir, removed).items():
            lower = (width - 1) // self.multiple * self.multiple
            if lower <= 0 or ir.spaces[space].kind != "conv2d":
                continue
            coupled = {s for g in _groups_in(ir, removed, space) for s, _ in ir.groups[g].members}
            if frozenset(coupled) in seen:  # a coupled width drops with this one
                continue
            seen.add(frozenset(coupled))
            fill = _fillable(ir, removed, self.multiple, coupled, fill_scores)
            start = removed - set(fill)
            kept_units = _groups_in(ir, start, space)
            bound = ir.sliced_macs(
                ir.mask_for(sorted(start | set(kept_units[: width - lower]))), self.multiple
            )
            if bound < cost:
                plans.append((cost - bound, space, lower, start))
        plans.sort(key=lambda plan: (-plan[0], plan[1]))
        return [(space, lower, start) for _, space, lower, start in plans]

    def _narrow(self, ctx: SearchContext, start: set, space: str, lower: int) -> set | None:
        """From a faithful `start`, remove `space`'s groups one at a time, least important
        first, each only if the rest stays faithful, until it is `lower` wide (None if it
        cannot get there)."""
        ir = ctx.ir
        scores = ctx.attribution(start)
        if scores is None:
            return None
        order = sorted(_groups_in(ir, start, space), key=lambda g: (_group_score(ir, g, scores), g))
        current, excess = set(start), _kept_widths(ir, start)[space] - lower
        for g in order:
            if excess <= 0:
                break
            if ctx.budget_left() <= 0:
                return None
            if ctx.evaluate(current | {g})[0]:
                current.add(g)
                excess -= sum(1 for s, _ in ir.groups[g].members if s == space)
        return current if excess <= 0 else None


def _kept_widths(ir: IR, removed: set) -> dict[str, int]:
    kept = ir.mask_for(sorted(removed))
    return {name: int(mask.sum()) for name, mask in sorted(kept.items())}


def _group_score(ir: IR, group: int, scores: dict[str, np.ndarray]) -> float:
    return float(sum(scores[space][unit] for space, unit in ir.groups[group].members))


def _groups_in(ir: IR, removed: set, space: str) -> list[int]:
    """Kept removable groups with units in `space`."""
    return [
        g
        for g in ir.removable_groups()
        if g not in removed and any(s == space for s, _ in ir.groups[g].members)
    ]


def _slack(ir: IR, removed: set, multiple: int, untouched) -> dict[str, int]:
    """Units each stored conv width (not in `untouched`) has room for before it widens."""
    return {
        name: ir.stored_width(name, width, multiple) - width
        for name, width in _kept_widths(ir, removed).items()
        if ir.spaces[name].kind == "conv2d" and name not in untouched
    }


def _fill_options(ir: IR, removed: set, multiple: int, untouched) -> list[int]:
    """Removed groups whose units all sit in stored conv widths with slack."""
    slack = _slack(ir, removed, multiple, untouched)
    return [g for g in sorted(removed) if all(slack.get(s, 0) > 0 for s, _ in ir.groups[g].members)]


def _fillable(
    ir: IR, removed: set, multiple: int, untouched, scores: dict[str, np.ndarray]
) -> list[int]:
    """The most important fill options (by `scores`) that fit the slack together."""
    slack = _slack(ir, removed, multiple, untouched)
    options = _fill_options(ir, removed, multiple, untouched)
    options.sort(key=lambda g: (-_group_score(ir, g, scores), g))
    chosen = []
    for g in options:
        need = Counter(s for s, _ in ir.groups[g].members)
        if all(slack[s] >= n for s, n in need.items()):
            chosen.append(g)
            for s, n in need.items():
                slack[s] -= n
    return chosen
