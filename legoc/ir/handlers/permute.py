"""permute / transpose / swapaxes: the units move with their axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

TRANSPOSES = ("transpose", "swapaxes", torch.transpose, torch.swapaxes)  # two dims swapped


def permute(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    ndim = len(shape_of(node.args[0]))
    rest = list(node.args[1:])
    if node.target in TRANSPOSES:
        a, b = (d % ndim for d in rest[:2])
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
    else:
        perm = [
            d % ndim
            for d in (rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest)
        ]
    return Layout(perm.index(layout.axis), layout.ids)
