"""roll: a cyclic shift along positions (Swin's shifted windows) moves whole slots, so every
slot keeps its unit and a removed unit's constant stays that constant; a shift along the unit
axis itself would reorder the units, and is not followed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import arg, shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def roll(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    dims = arg(node, 2, "dims")
    if dims is None or dims == ():  # flattened, rolled and put back: units mix
        return walk.cannot_slice(node)
    ndim = len(shape_of(node.args[0]))
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    if any(d % ndim == layout.axis for d in dims):
        walk.freeze(layout.ids, "rolled along the unit axis")
        return None
    return layout
