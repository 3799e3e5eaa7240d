"""torch.split / chunk / unbind and the getitem nodes that take their parts: each part of a
split along the unit axis gets its slice of the units (a fused q/k/v or gate/up projection);
a split along another axis hands every part the same units."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.handlers.index import index
from legoc.ir.handlers.slicing import getitem_slices, only_slices
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

CHUNK = (torch.chunk, "chunk", torch.ops.aten.chunk.default)
UNBIND = (torch.unbind, "unbind", torch.ops.aten.unbind.int)


def split(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    """torch.split / chunk / unbind. Records the parts' units (`walk.split_parts`); the split
    node itself carries none."""
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    in_shape = shape_of(node.args[0])
    unbind = node.target in UNBIND
    dim_at = 1 if unbind else 2
    dim = node.args[dim_at] if len(node.args) > dim_at else node.kwargs.get("dim", 0)
    dim %= len(in_shape)
    length = in_shape[dim]
    if unbind:
        if dim == layout.axis:
            walk.freeze(layout.ids, "unbound along the unit axis")
            return None
        axis = layout.axis - (dim < layout.axis)
        walk.split_parts[node.name] = (axis, [layout.ids] * length)
        return None
    sizes = part_sizes(node, length)
    if dim != layout.axis:
        walk.split_parts[node.name] = (layout.axis, [layout.ids] * len(sizes))
        return None
    bounds = np.cumsum([0, *sizes])
    walk.split_parts[node.name] = (
        layout.axis,
        [layout.ids[a:b] for a, b in itertools.pairwise(bounds)],
    )
    walk.splits.append(node.name)
    return None


def part_sizes(node: Node, length: int) -> list[int]:
    """The parts' lengths of a split (sizes or one size) or a chunk (a count of parts)."""
    size = node.args[1] if len(node.args) > 1 else _size_kwarg(node)
    if node.target in CHUNK:
        size = -(-length // size)
    if isinstance(size, (list, tuple)):
        return list(size)
    return [min(size, length - a) for a in range(0, length, size)]


def _size_kwarg(node: Node):
    for key in ("chunks", "split_size_or_sections", "split_size"):
        if key in node.kwargs:
            return node.kwargs[key]
    raise ValueError(f"{node.name}: no part size or count")


def getitem(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """A part of a split carries its units, a slice its slots; other indexing: `index`."""
    if node.args[0].name in walk.split_parts:
        axis, parts = walk.split_parts[node.args[0].name]
        return Layout(axis, parts[node.args[1]])
    if not tracked:
        return None
    layout = walk.sole_layout(node, tracked)
    if layout is not None and only_slices(node.args[1]):
        return getitem_slices(walk, node, layout)  # x[..., :d]: a slice of the unit axis too
    return index(walk, node, tracked)  # x[:, 0] and the like
