"""`legoc.ir.ops.select_outputs`: the task's outputs picked from the model's last dim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def select_outputs(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.first_layout(node)
    if layout is None:
        return walk.cannot_slice(node)
    if layout.axis != len(shape_of(node.args[0])) - 1:
        walk.freeze_inputs(node, "outputs selected across another axis")
        return None
    return Layout(layout.axis, layout.ids[list(node.args[1])])
