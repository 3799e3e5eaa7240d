"""Sliced stand-ins: a physically sliced model computes every mask that removes at least what
it was sliced for (the rewrite is exact) with fewer FLOPs than the masked source model.

A search passes a stand-in to the scorer with the masks it scores; the scorer builds and caches
them by mask (`Scorer.stand_in`) and routes nothing by them otherwise, so a search leaves the
scorer as it found it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.ir.ops import Ablate


@dataclass
class StandIn:
    """A sliced model standing for every mask that removes at least what `kept` removes."""

    kept: dict[str, np.ndarray]
    gm: torch.fx.GraphModule
    ablates: dict[str, Ablate]
    index: dict[str, np.ndarray]  # space -> original unit index of each sliced unit

    def covers(self, kept: dict[str, np.ndarray]) -> bool:
        return all(not (mask & ~self.kept[name]).any() for name, mask in kept.items())

    def route(self, kept: dict[str, np.ndarray]) -> None:
        """Set the sliced model's ablations to compute `kept` (which it must cover)."""
        for name, module in self.ablates.items():
            module.set(torch.from_numpy(np.ascontiguousarray(kept[name][self.index[name]])))
