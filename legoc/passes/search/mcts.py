"""`mcts`: Monte Carlo tree search over kept-unit sets, as in molecular rationale extraction.

A state is the set of removed dependency groups (its complement is the kept subgraph); an
action removes one more group, chosen among the `branching` least important kept groups by a
first-order attribution prior. Selection follows PUCT (Q + c * P * sqrt(N) / (1 + n)); an
expanded child is scored by real ablation: below `keep` it is a dead end with reward 0; at or
above it a rollout prunes along the prior ranking as far as faithfulness allows, and the reward
is the share of the root's parameters that rollout removed (max-backed-up, since one good leaf is
all we need). The search stops at `budget` candidate evaluations and returns the smallest
faithful state seen. It refines another method's result (`start`); started from nothing it
roots the tree at the one-shot first-order cut (`attribution`), since a walk of one removal
per level from the full model would not get far within any practical budget.

The tree stops early enough to leave the 1-minimality sweep (`minimize`, run after every
search) two passes over the root's kept groups: spending the whole budget in the tree left
shapes' mcts block at 280,616 parameters; with the reserve it is 61,591 (auto: 44,953).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from legoc.ir.core import IR
from legoc.passes.base import PassContext, PassResult
from legoc.passes.search.attribution import AttributionSearch
from legoc.passes.search.base import SearchContext, SearchPass, dead_groups
from legoc.passes.search.ranking import group_order, prune_prefix


@dataclass
class _Node:
    removed: frozenset[int]
    actions: list[int]  # untried, in prior order
    priors: dict[int, float]
    children: dict[int, _Node] = field(default_factory=dict)
    visits: int = 0
    best: float = 0.0  # max reward seen below this node
    dead: bool = False


@dataclass(frozen=True)
class MctsSearch(SearchPass):
    branching: int = 8
    exploration: float = 1.5
    rollout_budget: int = 12
    # evaluations left for the 1-minimality sweep that follows every search (`minimize`):
    # up to two sweeps over the groups the root keeps, at most half the budget
    sweep_reserve: float = 2.0
    name = "mcts"

    def run(self, ir: IR, pass_ctx: PassContext) -> PassResult:
        ctx = SearchContext(self, ir, pass_ctx)
        rng = np.random.default_rng(ctx.seed)
        start = set(ctx.start)
        root_removed = start | dead_groups(ir)
        if not start:  # one removal per tree level is too slow a walk from the full model:
            # root the tree at the one-shot first-order cut (a few evaluations) and refine that
            share = pass_ctx.budget.share(limit=max(1, ctx.budget_left() // 10))
            first = AttributionSearch().run(ir, replace(pass_ctx, budget=share))
            ctx.absorb(first.trace, 0)
            if first.stats["faithfulness"] >= ctx.keep:
                root_removed |= set(first.ir.removed_groups())
        ok, faith = ctx.evaluate(root_removed) if ctx.budget_left() > 0 else (False, 0.0)
        if not ok:  # dead groups change nothing, so only a start that is unfaithful lands here
            root_removed, faith = start, ctx.faithfulness_of(start)
        ctx.rebase(root_removed)
        scores = ctx.attribution(root_removed)
        if scores is None:  # no budget left for the prior: the root is the result
            return ctx.result(root_removed, faithfulness=faith, simulations=0, tree_nodes=0)
        kept = [g for g in ir.removable_groups() if g not in root_removed]
        rng.shuffle(kept)
        ranking = group_order(ir, scores, candidates=kept)
        search = _Tree(self, ctx, ranking, frozenset(root_removed))
        search.best_removed, search.best_faith = set(root_removed), faith
        simulations = 0
        reserve = min(ctx.budget_left() // 2, int(self.sweep_reserve * len(kept)))
        while ctx.budget_left() > reserve and not search.root.dead:
            search.simulate()
            simulations += 1
        return ctx.result(
            search.best_removed,
            faithfulness=search.best_faith,
            simulations=simulations,
            tree_nodes=search.nodes,
        )


class _Tree:
    def __init__(
        self, options: MctsSearch, ctx: SearchContext, ranking: list[int], root: frozenset[int]
    ):
        self.o, self.ctx, self.ranking = options, ctx, ranking
        self.root_params = ctx.cost(root)
        self.bad: set[int] = set()  # failed alone at some state: not worth trying deeper
        self.nodes = 0
        self.root = self.node(root)
        self.best_removed: set[int] = set(root)
        self.best_faith = 1.0

    def node(self, removed: frozenset[int]) -> _Node:
        self.nodes += 1
        actions = [g for g in self.ranking if g not in removed and g not in self.bad]
        actions = actions[: self.o.branching]
        weights = [1.0 / (rank + 1) for rank in range(len(actions))]  # prior from the ranking
        total = sum(weights) or 1.0
        return _Node(removed, actions, {a: w / total for a, w in zip(actions, weights)})

    def reward(self, removed) -> float:
        return (self.root_params - self.ctx.cost(removed)) / max(self.root_params, 1)

    def note(self, removed: set[int], faith: float) -> None:
        if self.ctx.cost(removed) < self.ctx.cost(self.best_removed):
            self.best_removed, self.best_faith = set(removed), faith

    def simulate(self) -> None:
        path, node = [self.root], self.root
        while not node.actions and node.children:
            live = [(a, c) for a, c in node.children.items() if not c.dead]
            if not live:
                node.dead = True
                break
            scale = max(self.root.best, 1e-9)
            node = max(
                live,
                key=lambda ac: (
                    ac[1].best / scale
                    + self.o.exploration
                    * node.priors[ac[0]]
                    * math.sqrt(node.visits)
                    / (1 + ac[1].visits)
                ),
            )[1]
            path.append(node)
        if node.dead:
            self.backup(path, 0.0)
            return
        if not node.actions:  # a leaf with nothing left to remove
            node.dead = True
            self.backup(path, 0.0)
            return
        action = node.actions.pop(0)
        child_removed = node.removed | {action}
        ok, faith = self.ctx.evaluate(child_removed)
        child = self.node(frozenset(child_removed)) if ok else _Node(frozenset(), [], {})
        node.children[action] = child
        path.append(child)
        if not ok:
            child.dead = True
            self.bad.add(action)
            self.backup(path, 0.0)
            return
        self.note(set(child_removed), faith)
        rest = [g for g in self.ranking if g not in child_removed and g not in self.bad]
        rollout = self.ctx.within(self.ctx.budget.share(evaluations=self.o.rollout_budget))
        removed, rollout_faith = prune_prefix(rollout, rest, removed=child_removed)
        if rollout_faith is not None and rollout_faith >= self.ctx.keep:
            self.note(removed, rollout_faith)
        self.backup(path, self.reward(removed))

    def backup(self, path: list[_Node], reward: float) -> None:
        for node in path:
            node.visits += 1
            node.best = max(node.best, reward)
