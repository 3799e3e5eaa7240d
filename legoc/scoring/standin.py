"""Sliced stand-ins: a physically sliced model computes every mask that removes at least what
it was sliced for (the rewrite is exact) with fewer FLOPs than the masked source model.

A scorer keeps the stand-ins it built in a small cache keyed by the mask each was sliced for,
so rebasing onto a mask seen recently (the same one again, or the one a search started from)
costs nothing, and its scores are bit-identical to a freshly sliced one's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.ir.core import IR
from legoc.ir.ops import Ablate

STAND_INS_CACHED = 2  # sliced models kept (the active one and the one before it)

Mask = dict[str, np.ndarray]
ScoringGraph = Callable[[IR], tuple[torch.fx.GraphModule, dict[str, Ablate]]]


@dataclass
class StandIn:
    """A sliced model standing for every mask that removes at least what `kept` removes."""

    kept: Mask
    gm: torch.fx.GraphModule
    ablates: dict[str, Ablate]
    index: dict[str, np.ndarray]  # space -> original unit index of each sliced unit

    def covers(self, kept: Mask) -> bool:
        return all(not (mask & ~self.kept[name]).any() for name, mask in kept.items())

    def route(self, kept: Mask) -> None:
        """Set the sliced model's ablations to compute `kept` (which it must cover)."""
        for name, module in self.ablates.items():
            module.set(torch.from_numpy(np.ascontiguousarray(kept[name][self.index[name]])))


def mask_key(kept: Mask) -> tuple:
    """A hashable key of a mask: space names and their packed bits."""
    return tuple((name, len(m), np.packbits(m).tobytes()) for name, m in sorted(kept.items()))


def slice_stand_in(
    ir: IR, kept: Mask, values: dict[str, torch.Tensor], scoring_graph: ScoringGraph
) -> StandIn:
    """The rewrite passes applied to `ir` masked by `kept`, instrumented for scoring with the
    ablation values of the units it keeps."""
    from legoc.passes import REWRITE_PASSES, SCORING_PIPELINE, run_pipeline

    masked = ir.with_kept(kept)
    masked.ablation = dict(values)
    sliced, _ = run_pipeline(masked, [REWRITE_PASSES[n]() for n in SCORING_PIPELINE])
    gm, ablates = scoring_graph(sliced)
    index = {name: np.flatnonzero(kept[name]) for name in ablates}
    for name, module in ablates.items():
        module.set(
            torch.ones(len(index[name]), dtype=torch.bool),
            values[name][torch.from_numpy(index[name])],
        )
    return StandIn({k: v.copy() for k, v in kept.items()}, gm, ablates, index)


class StandIns:
    """The stand-ins a scorer built, keyed by mask (least recently used dropped first); at most
    one is active."""

    def __init__(self, build: Callable[[Mask], StandIn], size: int = STAND_INS_CACHED):
        self._build, self._size = build, size
        self._cache: OrderedDict[tuple, StandIn] = OrderedDict()
        self.active: StandIn | None = None

    def select(self, kept: Mask) -> StandIn | None:
        """Make the stand-in of `kept` active, slicing it unless cached; none for a mask that
        removes nothing (the source model is its own stand-in)."""
        if all(mask.all() for mask in kept.values()):
            self.active = None
            return None
        key = mask_key(kept)
        stand_in = self._cache.pop(key, None)
        if stand_in is None:
            stand_in = self._build(kept)
        self._cache[key] = stand_in
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        self.active = stand_in
        return stand_in
