"""Concatenation along the unit axis: the output's slots are the inputs' slots, shifted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def cat(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    ndim = len(shape_of(node))
    dim = dim % ndim
    layouts = [walk.layouts.get(t.name) for t in tensors]
    axis = {lay.axis for lay in layouts if lay is not None}
    if len(axis) != 1 or next(iter(axis)) != dim:
        walk.freeze_inputs(node, "concatenated along another axis")
        return None
    parts = []
    for tensor, lay in zip(tensors, layouts):
        parts.append(lay.ids if lay is not None else np.full(shape_of(tensor)[dim], -1))
    return Layout(dim, np.concatenate(parts))
