"""Zero padding along positions (Swin pads its windows to whole multiples of their size).

A removed unit holds its ablation constant at every real position but zero in the padding, so
a reader's bias cannot fold it, except where the padded tensor is a layer norm's output over
the units: its readers rebuild the removed units from carrier channels, linearly, and the
carriers are padded with zeros too, so every padded position reaches the reader as zeros on
both sides (`norm.follow` lets the pad pass such a norm's output). Any other padding of units,
or padding along the unit axis, freezes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import arg, shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def pad(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    pads, mode, value = arg(node, 1, "pad"), arg(node, 2, "mode", "constant"), arg(node, 3, "value")
    if mode != "constant" or value not in (None, 0) or not isinstance(pads, (list, tuple)):
        return walk.cannot_slice(node)
    ndim = len(shape_of(node.args[0]))
    padded = {ndim - 1 - i // 2 for i, p in enumerate(pads) if p != 0}
    if layout.axis in padded:
        walk.freeze(layout.ids, "padded along the unit axis")
        return None
    if padded and node.args[0].name not in walk.normed:
        walk.freeze(layout.ids, "zero padding of units that are not a norm's output")
        return None
    return layout
