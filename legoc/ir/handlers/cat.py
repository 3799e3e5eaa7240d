"""Concatenation along the unit axis: the output's slots are the inputs' slots, shifted; along
another axis, of tensors carrying the same units, every slot keeps its unit."""

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
    if len(axis) == 1 and next(iter(axis)) != dim:
        return _along_another_axis(walk, node, layouts)
    if len(axis) != 1:
        walk.freeze_inputs(node, "concatenated along another axis")
        return None
    parts = []
    for tensor, lay in zip(tensors, layouts):
        parts.append(lay.ids if lay is not None else np.full(shape_of(tensor)[dim], -1))
    return Layout(dim, np.concatenate(parts))


def _along_another_axis(walk: Propagation, node: Node, layouts: list) -> Layout | None:
    """Pieces of the same units joined along another axis (RoPE's rotated and passed halves of
    a head): each slot keeps its unit, coupled with whatever meets it."""
    first = layouts[0]
    if any(lay is None or len(lay.ids) != len(first.ids) for lay in layouts):
        walk.freeze_inputs(node, "concatenated with a non-unit tensor along another axis")
        return None
    ids = first.ids
    for lay in layouts[1:]:
        ids = walk.couple(ids, lay.ids, "concatenated along another axis")
    return Layout(first.axis, ids)
