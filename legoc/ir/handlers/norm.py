"""Normalisations: batch norm is per channel (its scale, shift and statistics are sliced with
the units); a layer or group norm mixes all the units it normalises, so it freezes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.units import ChannelParam, Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def batch_norm(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    if layout.axis != 1:
        walk.freeze_inputs(node, "batch_norm over a non-channel axis")
        return None
    for arg in node.args[1:5]:
        if isinstance(arg, Node) and arg.op == "get_attr":
            walk.channel_params.append(ChannelParam(arg.target, node.name, 0, layout.ids))
    return layout


def layer_norm(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    walk.freeze_inputs(node, "a norm over the units couples all of them")
    return None
