"""Linear and Conv layers: they read units along their contracted axis (as *consumers*, whose
bias absorbs the constants of removed units) and produce units of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import ConsumerUse, Layout
from legoc.ir.vocabulary import LINEAR_OPS

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def producer(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    consumer(walk, node, tracked)
    space = walk.producer_of.get(node.name)
    if space is None:  # a weight applied a second time: it makes no new units
        return None
    ndim = len(shape_of(node))
    axis = ndim - 1 if space.kind == "linear" else 1
    return Layout(axis, np.arange(space.offset, space.offset + space.size))


def consumer(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    x = node.args[0]
    layout = walk.layouts.get(x.name) if isinstance(x, Node) else None
    others = [a for a in tracked if a is not x]
    for other in others:  # units flowing into weights or biases: not sliceable
        walk.freeze(walk.layouts[other.name].ids, f"used as a weight by {node.name}")
    if layout is None:
        return
    shared = walk.shared_uses(node.args[1].target)
    if shared:  # its columns serve every use of the weight
        walk.freeze(layout.ids, f"read by {node.name}: {shared}")
        return
    contracted = len(shape_of(x)) - 1 if node.target in LINEAR_OPS else 1
    if layout.axis != contracted:
        walk.freeze(layout.ids, f"read by {node.name} along a non-contracted axis")
        return
    walk.read[layout.ids[layout.ids >= 0]] = True
    walk.consumers.append(ConsumerUse(node.name, layout.ids))
