"""Concatenation. Along the unit axis the output's slots are the inputs' slots, shifted. Along
another axis (a class token put before the patch tokens) the units pass through when every
operand carries the same units there or is a parameter, expanded: its entries are per-unit
parameters, sliced with the units."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import ChannelParam, Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

# ops between a parameter and the concatenation that keep its entries per unit
_VIEWS = {"expand", "repeat", "contiguous", "clone"}


def cat(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    ndim = len(shape_of(node))
    dim = dim % ndim
    layouts = [walk.layouts.get(t.name) for t in tensors]
    axis = {lay.axis for lay in layouts if lay is not None}
    if len(axis) == 1 and next(iter(axis)) != dim:
        return _along_other_axis(walk, node, tensors, layouts)
    if len(axis) != 1:
        walk.freeze_inputs(node, "concatenated along another axis")
        return None
    parts = []
    for tensor, lay in zip(tensors, layouts):
        parts.append(lay.ids if lay is not None else np.full(shape_of(tensor)[dim], -1))
    return Layout(dim, np.concatenate(parts))


def _along_other_axis(walk: Propagation, node: Node, tensors, layouts) -> Layout | None:
    first = next(lay for lay in layouts if lay is not None)
    params = []
    for tensor, lay in zip(tensors, layouts):
        if lay is not None:
            if len(lay.ids) != len(first.ids) or (lay.ids != first.ids).any():
                walk.freeze_inputs(node, "concatenated along another axis with other units")
                return None
            continue
        param = _expanded_parameter(walk, tensor, first.axis, len(first.ids))
        if param is None:
            walk.freeze_inputs(node, "concatenated along another axis with a computed tensor")
            return None
        params.append(param)
    for target, user in params:
        walk.channel_params.append(ChannelParam(target, user, first.axis, first.ids))
    return Layout(first.axis, first.ids)


def _expanded_parameter(walk: Propagation, tensor: Node, axis: int, width: int):
    """(target, user) of the parameter `tensor` expands, when its `axis` holds the units."""
    user = None
    while tensor.op == "call_method" and tensor.target in _VIEWS:
        sizes = tensor.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        if tensor.target == "expand" and len(sizes) > axis and sizes[axis] != -1:
            return None
        if tensor.target == "repeat" and len(sizes) > axis and sizes[axis] != 1:
            return None
        user, tensor = tensor, tensor.args[0]
    if tensor.op != "get_attr" or user is None:
        return None
    shape = shape_of(tensor)
    if shape is None or len(shape) != len(shape_of(user)) or shape[axis] != width:
        return None
    return tensor.target, user.name
