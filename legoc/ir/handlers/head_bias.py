"""Helpers of the attention handlers.

A per-head attention bias or mask (T5's relative position bias, ALiBi-like tables): after
slicing, it must lose the removed heads too. When it is looked up from a weight (an embedding
whose last dim is the heads, or a (positions, heads) table indexed with `table[index]` as
Swin's and MaxViT's relative position biases are) through per-head ops, that weight is sliced
with the heads; a
bias shared by several layers (T5 computes it once) couples their heads slot by slot. Anything
else computed per head cannot be sliced: the caller freezes the heads."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import ChannelParam

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

aten = torch.ops.aten

_SAME = {aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.clone.default, "contiguous"}
_EMBEDDING = {aten.embedding.default, torch.nn.functional.embedding}
_RESHAPES = {torch.reshape, aten.view.default, aten.reshape.default, "view", "reshape"}


def slice_head_bias(walk: Propagation, bias: Node, axis: int, ids: np.ndarray) -> bool:
    """Register the weight `bias` is looked up from (heads along `axis` of `bias`) to be sliced
    with `ids`; False when the bias is not such a lookup."""
    source = _lookup(bias, axis)
    if source is None:
        return False
    embedding, weight = source
    if embedding.name in walk.producer_of:  # a table of per-head biases, not of features
        walk.bias_embeddings.add(embedding.name)
    for param in walk.channel_params:
        if param.target == weight.target:
            if len(param.ids) != len(ids):
                return False
            walk.couple(param.ids, ids, "attention head (shared position bias)")
            return True
    walk.channel_params.append(ChannelParam(weight.target, embedding.name, 1, ids))
    return True


def lookup_source(node: Node) -> str | None:
    """The embedding node `node` is computed from through one-input ops, if any."""
    for _ in range(32):
        if node.target in _EMBEDDING:
            return node.name
        inputs = node.all_input_nodes
        if node.op != "call_function" or not inputs:
            return None
        node = inputs[0]
    return None


def _lookup(node: Node, axis: int) -> tuple[Node, Node] | None:
    """Follow the head axis back through per-head ops to `embedding(weight, index)`."""
    for _ in range(32):
        target = node.target
        shape = shape_of(node)
        if shape is None:
            return None
        if target in _EMBEDDING:
            weight = node.args[0]
            ok = isinstance(weight, Node) and weight.op == "get_attr" and axis == len(shape) - 1
            return (node, weight) if ok else None
        if _gathers_rows(node):  # table[index]: rows of a (positions, heads) weight
            return (node, node.args[0]) if axis == len(shape) - 1 else None
        if target in _SAME:
            node = node.args[0]
        elif target in _RESHAPES:  # (n * n, heads) -> (n, n, heads): the last axis stays
            before = shape_of(node.args[0])
            if before is None or axis != len(shape) - 1 or before[-1] != shape[-1]:
                return None
            axis, node = len(before) - 1, node.args[0]
        elif target in (aten.unsqueeze.default, torch.unsqueeze, "unsqueeze"):
            dim = node.args[1] % len(shape)
            if axis == dim:
                return None
            axis, node = axis - (dim < axis), node.args[0]
        elif target in (torch.permute, aten.permute.default, "permute"):
            dims = node.args[1] if isinstance(node.args[1], (tuple, list)) else node.args[1:]
            axis, node = list(dims)[axis] % len(shape), node.args[0]  # x.permute(2, 0, 1) too
        elif target in (aten.where.ScalarOther, aten.where.self, torch.where):
            values = [a for a in node.args[1:3] if isinstance(a, Node)]
            if len(values) != 1:
                return None
            axis, node = _aligned(axis, shape, values[0])
        elif target in (aten.add.Tensor, "add", operator.add):
            tensors = [a for a in node.args[:2] if isinstance(a, Node)]
            per_head = [t for t in tensors if _has_heads(t, axis, shape)]
            if len(per_head) != 1:
                return None
            axis, node = _aligned(axis, shape, per_head[0])
        else:
            return None
        if axis is None or not isinstance(node, Node):
            return None
    return None


def _gathers_rows(node: Node) -> bool:
    """`table[index]` (aten.index with one index tensor under torch.export) on a 2-d weight."""
    if node.target is operator.getitem:
        table, index = node.args
    elif node.target is aten.index.Tensor and len(node.args[1]) == 1:
        table, index = node.args[0], node.args[1][0]
    else:
        return False
    meta = index.meta.get("tensor_meta") if isinstance(index, Node) else None
    return (
        isinstance(table, Node)
        and table.op == "get_attr"
        and len(shape_of(table) or ()) == 2
        and meta is not None
        and not meta.dtype.is_floating_point
        and meta.dtype is not torch.bool  # a mask picks rows, not positions
    )


def _aligned(axis: int, shape, operand: Node) -> tuple[int | None, Node]:
    """The head axis in a broadcast operand (aligned from the right); None if broadcast."""
    other = shape_of(operand) or ()
    dim = axis - (len(shape) - len(other))
    return (dim if 0 <= dim < len(other) and other[dim] == shape[axis] else None), operand


def _has_heads(operand: Node, axis: int, shape) -> bool:
    other = shape_of(operand) or ()
    dim = axis - (len(shape) - len(other))
    return 0 <= dim < len(other) and other[dim] == shape[axis] and other[dim] > 1


def per_head_mask_follows(walk: Propagation, node: Node, head_axis: int, ids: np.ndarray) -> bool:
    """scaled_dot_product_attention's mask: broadcast over the heads, or sliced with them;
    otherwise the heads freeze (False)."""
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if not isinstance(mask, Node) or not _has_heads(mask, head_axis, shape_of(node)):
        return True
    dim = head_axis - (len(shape_of(node)) - len(shape_of(mask)))
    if slice_head_bias(walk, mask, dim, ids):
        return True
    walk.freeze(ids, "a per-head attention mask computed in the graph")
    return False


def one_unit(walk: Propagation, ids: np.ndarray) -> np.ndarray:
    """Couple every id into one group: a one-head attention layer is one unit."""
    ids = ids.copy()
    units = ids[ids >= 0]
    if len(units) < len(ids):  # a channel that is not a unit: the head cannot go
        walk.freeze(units, "one-head attention over channels that are not all units")
        return ids
    walk.couple(np.full_like(units, units[0]), units, "attention head")
    return ids
