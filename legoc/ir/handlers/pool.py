"""Pooling: per channel over positions, so it keeps channel units (axis 1) and freezes units
along any other axis, which it would mix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import op_name, shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def pool(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    if layout.axis == 1 and len(shape_of(node.args[0])) >= 3:
        return Layout(1, layout.ids)
    walk.freeze_inputs(node, f"pooled across units by {op_name(node)}")
    return None
