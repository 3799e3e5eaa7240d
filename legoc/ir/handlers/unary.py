"""Element-wise ops of one tensor: they map constants to constants and keep every slot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def unary(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    return layout
