"""`mask`: learned relaxed-binary masks over dependency groups (hard-concrete / L0).

Each removable group gets a gate z in [0, 1] drawn from a hard-concrete distribution with a
learned location log_alpha (Louizos et al., 2018); a gated unit outputs
value + z * (activation - value), so z = 0 is exactly the ablation legoc scores. The weights
stay frozen; the gates train on the task's proxy loss plus a penalty pulling the expected kept
parameter fraction toward a target that is lowered step by step (the sparsity schedule). The
log_alpha order at several points of the schedule gives candidate rankings; each is cut at the
longest faithful prefix by real ablation (the threshold search), and the smallest faithful cut
wins; a later ranking is bisected only if its first prefix smaller than the best cut so far is
faithful (one evaluation instead of a dozen for a ranking that cannot win). Repair (in the
pipeline) re-adds groups if anything still falls short of keep.

Gradient steps are charged against the budget (`legoc.scoring.gradient_cost`: 3 * rows / N
evaluations each), and training takes at most MASK_SHARE of the budget left, so the cuts (and,
in `auto`, the sweep) have the rest: a small budget trains fewer steps on a shorter schedule.
Under a deadline (--time-limit), the first steps are timed and training is re-planned to take
at most MASK_SHARE of the time left as well.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.base import SearchContext, SearchPass, dead_groups
from legoc.passes.search.ranking import first_prefix_below, prune_prefix
from legoc.runtime import stop
from legoc.scoring.budget import gradient_cost

BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1  # the hard-concrete stretch (Louizos et al.)


def open_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0): the expected share of the time a gate lets its group through."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def sample_gates(log_alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(log_alpha.shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


@dataclass(frozen=True)
class MaskSearch(SearchPass):
    steps: int = 300
    batch_rows: int | None = None  # None: MAX_ROWS, fewer for models costlier than STEP_MACS
    lr: float = 0.05
    penalty: float = 5.0
    final_target: float = 0.02  # kept-parameter fraction the schedule ends at
    snapshots: int = 8
    name = "mask"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        ctx = SearchContext(self, ir, pass_ctx)
        start = set(ctx.start) | dead_groups(ir)
        groups = [g for g in ir.removable_groups() if g not in start]
        rankings, steps = self.learn_rankings(ir, ctx, groups, start)
        best, best_faith = set(ctx.start), None
        tried = set()
        for order in rankings:
            if ctx.budget_left() <= 0:
                break
            key = tuple(order)
            if key in tried:
                continue
            tried.add(key)
            floor, floor_faith = 0, None
            if best_faith is not None:  # worth a bisection only if it can beat the best cut:
                # the first prefix smaller than the best must be faithful (one evaluation)
                floor = first_prefix_below(ctx, order, start, ctx.cost(best))
                if floor is None:
                    continue
                ok, floor_faith = ctx.evaluate(start | set(order[:floor]))
                if not ok:
                    continue
            removed, faith = prune_prefix(ctx, order, start, floor, floor_faith)
            if faith >= ctx.keep and (best_faith is None or ctx.cost(removed) < ctx.cost(best)):
                best, best_faith = removed, faith
        return ctx.result(
            best,
            faithfulness=best_faith,
            rankings_tried=len(tried),
            mask_steps=steps,
        )

    def planned_steps(self, ctx: SearchContext, batch_rows: int) -> int:
        """`steps`, or fewer when they would take more than MASK_SHARE of the budget left or,
        for a costly model, more than MASK_MACS of work (`steps_for_cost`)."""
        cost = gradient_cost(batch_rows, len(ctx.scorer.split))
        at_most = min(self.steps, steps_for_cost(ctx.ir, batch_rows))
        return ctx.budget.steps_within(MASK_SHARE, cost, at_most)

    def marks(self, steps: int) -> set[int]:
        """The steps after which the gate order is taken as a ranking."""
        return {int(steps * (i + 1) / self.snapshots) - 1 for i in range(self.snapshots)}

    def learn_rankings(
        self, ir: IR, ctx: SearchContext, groups: list[int], start: set[int]
    ) -> tuple[list[list[int]], int]:
        """log_alpha orders (least important first) at evenly spaced points of the schedule,
        and the gradient steps taken (fewer than planned when the deadline passes)."""
        scorer = ctx.scorer
        generator = torch.Generator().manual_seed(ctx.seed)
        index = {}
        for name, space in ir.spaces.items():  # unit -> gate slot; -1 kept, -2 removed
            slots = torch.full((space.size,), -1, dtype=torch.long)
            index[name] = slots
        slot_of = {g: i for i, g in enumerate(groups)}
        for g in ir.removable_groups():
            for space, unit in ir.groups[g].members:
                index[space][unit] = slot_of.get(g, -2)
        params = torch.tensor([float(ir.group_cost(g)) for g in groups])
        total = float(params.sum()) or 1.0
        log_alpha = torch.full((len(groups),), 3.0, requires_grad=True)
        optimizer = torch.optim.Adam([log_alpha], lr=self.lr)
        frozen = [p for p in scorer.gm.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        n_rows = len(scorer.split)
        batch_rows = min(self.batch_rows or step_rows(ir), n_rows)
        steps = self.planned_steps(ctx, batch_rows)
        marks = self.marks(steps)
        rankings = []
        taken, started = 0, time.monotonic()
        try:
            for step in itertools.count():
                if step >= steps or ctx.time_up():
                    break
                progress = min(1.0, step / max(1, int(0.85 * steps)))
                target = 1.0 - (1.0 - self.final_target) * progress
                z = sample_gates(log_alpha, generator)
                gates = {name: _unit_gates(slots, z) for name, slots in index.items()}
                rows = torch.randint(n_rows, (batch_rows,), generator=generator)
                kept_share = (open_probability(log_alpha) * params).sum() / total
                stop.check()  # a Ctrl-C or SIGTERM whose exception was lost: stop now
                loss = scorer.gated_loss(gates, rows) + self.penalty * (kept_share - target) ** 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                taken = step + 1
                if taken == TIMED_STEPS and ctx.budget.until is not None:
                    steps = _steps_in_time(steps, taken, started, ctx.budget.until)
                    marks = self.marks(steps)
                ctx.report("mask training", step + 1, steps)
                if step in marks:
                    order = np.argsort(log_alpha.detach().numpy(), kind="stable")
                    rankings.append([groups[i] for i in order])
        finally:
            for p in frozen:
                p.requires_grad_(True)
        if taken < steps:  # stopped by the deadline: the phase ends where it stopped
            ctx.report("mask training", taken, taken)
        return rankings[::-1], taken  # sparsest schedule point first: the most promising cut


MASK_SHARE = 0.5  # of the budget left, at most, for training (the cuts need the rest)
TIMED_STEPS = 5  # under a deadline, steps timed to re-plan training to MASK_SHARE of the time


def _steps_in_time(steps: int, taken: int, started: float, deadline: float) -> int:
    """The steps that fit in MASK_SHARE of the time from `started` to `deadline`, at the pace
    of the `taken` steps so far (at least those, at most `steps`): under --time-limit, training
    leaves the cut and the sweep their share of the time as it does of the budget."""
    pace = (time.monotonic() - started) / taken
    share = MASK_SHARE * (deadline - started)
    return int(np.clip(share // max(pace, 1e-9), taken, steps))


MAX_ROWS, MIN_ROWS = 64, 16
STEP_MACS = 10**9  # one gradient step's forward work: 64 rows of the shapes CNN fit in it


def step_rows(ir: IR) -> int:
    """Rows per gradient step: 64, fewer for big models (MiniLM: 16), so the mask phase does
    not dwarf the candidate evaluations it exists to save."""
    return int(np.clip(STEP_MACS // max(ir.macs_per_row(), 1), MIN_ROWS, MAX_ROWS))


# The mask phase's work at most, in multiply-accumulates (forward + backward = 3 forwards):
# a budgeted evaluation usually stops after its first batch, a gradient step never does, so on
# big models a budget share of steps dwarfed the search (GPT-2 small, 128 rows x 32 tokens,
# budget 200: 266 steps, ~100 forward passes' worth). 2.5e12 leaves models up to ~5e7 MACs
# per row (the shapes CNN) their 300 steps; GPT-2 small / BERT-base get ~20, GPT-2 medium 8.
MASK_MACS = 25 * 10**11
MIN_STEPS = 8  # fewer gates no longer order the groups usefully


def steps_for_cost(ir: IR, batch_rows: int) -> int:
    """Gradient steps of `batch_rows` rows that fit in MASK_MACS (at least MIN_STEPS)."""
    per_step = 3 * max(ir.macs_per_row(), 1) * batch_rows
    return max(MIN_STEPS, MASK_MACS // per_step)


def _unit_gates(slots: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    gates = torch.ones(slots.shape)
    gated = slots >= 0
    gates = gates.masked_scatter(gated, z[slots[gated]]) if gated.any() else gates
    return torch.where(slots == -2, torch.zeros(()), gates)
