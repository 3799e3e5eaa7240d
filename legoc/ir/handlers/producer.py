"""Linear and Conv layers: they read units along their contracted axis (as *consumers*, whose
bias absorbs the constants of removed units) and produce units of their own.

A grouped conv (depthwise: one input channel per group) is no consumer: group j's outputs read
only group j's inputs, and the weight's input dim is per group, so the only exact cut is a whole
group: its input channels and output channels are coupled, and slicing drops the group (the
conv keeps `groups - removed` groups). The removed outputs are ablated like any unit."""

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
    space = walk.producer_of.get(node.name)
    if space is not None and space.groups > 1:
        return grouped(walk, node, tracked, space)
    consumer(walk, node, tracked)
    if space is None:  # a weight applied a second time: it makes no new units
        return None
    ndim = len(shape_of(node))
    axis = ndim - 1 if space.kind in ("linear", "embedding") else 1
    return Layout(axis, np.arange(space.offset, space.offset + space.size))


def grouped(walk: Propagation, node: Node, tracked: list[Node], space) -> Layout:
    """Couple each group's output channels with the input channels it reads."""
    ids = np.arange(space.offset, space.offset + space.size)
    blocks = ids.reshape(space.groups, -1)
    x = node.args[0]
    for other in [a for a in tracked if a is not x]:
        walk.freeze(walk.layouts[other.name].ids, f"used as a weight by {node.name}")
    layout = walk.layouts.get(x.name) if isinstance(x, Node) else None
    why = f"grouped conv {node.name}"
    if layout is None or layout.axis != 1:
        if layout is not None:
            walk.freeze(layout.ids, f"read by {node.name} along a non-contracted axis")
        walk.freeze(ids, f"{why} reads channels that are not units")
        return Layout(1, ids)
    walk.read[layout.ids[layout.ids >= 0]] = True
    inputs = layout.ids.reshape(space.groups, -1)
    for out_block, in_block in zip(blocks, inputs):
        for unit in out_block[1:]:
            walk.couple(np.array([out_block[0]]), np.array([unit]), why)
        for unit in in_block:
            walk.couple(np.array([out_block[0]]), np.array([unit]), why)
    return Layout(1, ids)


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
