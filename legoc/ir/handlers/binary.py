"""Element-wise ops of two tensors (+, -, *, /): units that meet in one slot are *coupled*
(removed together); a per-unit constant operand is sliced with the units; an operand that
depends on the input, or a broadcast across the units, freezes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir import ops
from legoc.ir.graph import op_name, shape_of
from legoc.ir.handlers.weighted import normalizes, weigh
from legoc.ir.units import ChannelParam, Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def binary(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    name = op_name(node)
    a, b = ((*node.args, node.kwargs.get("other")))[:2]
    la = walk.layouts.get(a.name) if isinstance(a, Node) else None
    lb = walk.layouts.get(b.name) if isinstance(b, Node) else None
    out_shape = shape_of(node)
    if la is not None and lb is not None:
        if not _aligned(la, shape_of(a), lb, shape_of(b), out_shape):
            walk.freeze_inputs(node, f"{name} of misaligned unit tensors")
            return None
        # a gate (x * sigmoid(fc(pool(x))), SE) broadcasts over positions, not over units:
        # a removed channel and its removed gate are two constants, so the product is one
        axis = la.axis + len(out_shape) - len(shape_of(a))
        return Layout(axis, walk.couple(la.ids, lb.ids, name))
    layout, tracked_arg, other = (la, a, b) if la is not None else (lb, b, a)
    if not isinstance(other, Node):
        return layout  # a Python scalar keeps constants constant
    if other.op == "call_function" and other.target is ops.constant_channel_conv:
        kernel = other.args[1]  # its output channels are the units: slice them together
        walk.channel_params.append(ChannelParam(kernel.target, other.name, 0, layout.ids))
        return layout
    if other.op == "call_function" and other.target is ops.token_constant:
        table = other.args[1]  # a folded map over positions: its channels are the units
        walk.channel_params.append(ChannelParam(table.target, node.name, layout.axis, layout.ids))
        return layout
    if other.name in walk.input_dependent:
        if weigh(walk, node, layout, other) or normalizes(walk, node, tracked_arg, other):
            return layout  # a weighted mean over positions (handlers/weighted)
        walk.freeze(layout.ids, f"{name} with an input-dependent tensor")
        return None
    other_shape = shape_of(other) or ()
    ndim = len(out_shape)
    dim = layout.axis - (ndim - len(other_shape))
    if shape_of(tracked_arg) != out_shape:
        walk.freeze(layout.ids, f"{name} broadcasts the units")
        return None
    if 0 <= dim < len(other_shape) and other_shape[dim] != 1:
        if other.op != "get_attr":
            walk.freeze(layout.ids, f"{name} with a computed per-unit constant")
            return None
        walk.channel_params.append(ChannelParam(other.target, node.name, dim, layout.ids))
    return layout


def _aligned(la: Layout, shape_a, lb: Layout, shape_b, out_shape) -> bool:
    """Both unit axes are the same output axis, of the same length, and any broadcast is
    over other axes (positions), never over the units."""
    if len(la.ids) != len(lb.ids) or shape_a is None or shape_b is None:
        return False
    axis_a = la.axis + len(out_shape) - len(shape_a)
    axis_b = lb.axis + len(out_shape) - len(shape_b)
    if axis_a != axis_b or shape_a[la.axis] != out_shape[axis_a]:
        return False
    return shape_b[lb.axis] == out_shape[axis_b]
