"""A weighted mean over positions: `(x * w).sum(d) / w.sum(d)`, with `w` an input-dependent
weight broadcast over the units (an attention mask: sentence-transformers' mean pooling).

Multiplying units by an input-dependent tensor freezes them anywhere else: a removed unit's
constant c becomes c * w, which varies with the input. Here the division by the weights' own
sum takes it back to c (wherever the weights do not sum to zero), so a Linear reading the mean
folds it like any constant. The walk follows the three steps and nothing else: the product is
*weighted*, its sum over `d` is a *weighted sum*, and only a division by `w.sum(d)` (clamped
away from zero or not) makes units of it again; any other reader freezes them.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
from torch.fx import Node

from legoc.ir.graph import arg, shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

_MUL = {operator.mul, torch.mul, "mul"}
_DIV = {operator.truediv, torch.div, "div"}
_SUM = {torch.sum, "sum"}
_CLAMP = {torch.clamp, torch.clamp_min, "clamp", "clamp_min"}
# ops between the weights and their broadcast form that change no value's meaning: a cast,
# an expand over the units (sentence-transformers' `mask.unsqueeze(-1).expand(x.size())`)
_SAME = {"expand", "expand_as", "float", "to", "type_as"}


def weigh(walk: Propagation, node: Node, layout: Layout, weights: Node) -> bool:
    """`node` multiplies units by input-dependent `weights`: a weighted mean's first step when
    the weights are one value per position (size 1 along the units, or expanded from it)."""
    if node.target not in _MUL or len(node.args) != 2:
        return False
    out_shape = shape_of(node)
    source = _source(weights)
    shape = shape_of(source)
    if shape is None or out_shape is None or len(shape) != len(out_shape):
        return False
    if shape[layout.axis] != 1:
        return False
    walk.weighted[node.name] = (source.name, None)
    return True


def normalizes(walk: Propagation, node: Node, numerator: Node, denominator: Node) -> bool:
    """`node` divides a weighted sum by the sum of its own weights over the same axes."""
    state = walk.weighted.get(numerator.name)
    if node.target not in _DIV or node.args[0] is not numerator or state is None:
        return False
    weights, dims = state
    while isinstance(denominator, Node) and denominator.target in _CLAMP:
        denominator = denominator.args[0]
    if not isinstance(denominator, Node) or dims is None or denominator.target not in _SUM:
        return False
    source = _source(denominator.args[0])
    if source is None or source.name != weights:
        return False
    return _sum_dims(denominator) == dims and _keepdim(denominator) == _keepdim(numerator)


def follow(walk: Propagation, node: Node, weighted: list[Node], layout: Layout | None):
    """After `node`'s handler: a weighted tensor may only be summed over other axes than the
    units' (once), then divided by its weights' sum; anything else freezes its units."""
    if len(weighted) == 1 and layout is not None:
        weights, dims = walk.weighted[weighted[0].name]
        if dims is None and node.target in _SUM and node.args[0] is weighted[0]:
            walk.weighted[node.name] = (weights, _sum_dims(node))
            return layout
        if dims is not None and normalizes(walk, node, weighted[0], node.args[1]):
            return layout
    for pending in weighted:
        if pending.name in walk.layouts:
            walk.freeze(walk.layouts[pending.name].ids, "mul with an input-dependent tensor")
    return None


def _source(node) -> Node | None:
    """The tensor `node` broadcasts or casts (itself when it does neither)."""
    while isinstance(node, Node) and node.target in _SAME and node.args:
        node = node.args[0]
    return node if isinstance(node, Node) else None


def _sum_dims(node: Node) -> frozenset[int] | None:
    dims = arg(node, 1, "dim")
    ndim = len(shape_of(node.args[0]) or ())
    if dims is None or not ndim:
        return None
    return frozenset(d % ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims]))


def _keepdim(node: Node) -> bool:
    return node.target in _SUM and bool(arg(node, 2, "keepdim", False))
