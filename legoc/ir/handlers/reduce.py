"""Reductions (mean, sum, amax, amin) over other axes keep the units; over the unit axis (or
all axes) they mix them, which freezes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def reduce(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    in_shape = shape_of(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if dims is None:
        walk.freeze(layout.ids, "reduced over all axes")
        return None
    dims = {d % len(in_shape) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
    if layout.axis in dims:
        walk.freeze(layout.ids, "reduced over the unit axis")
        return None
    axis = layout.axis if keepdim else layout.axis - sum(d < layout.axis for d in dims)
    return Layout(axis, layout.ids)
