"""Slices of a tensor (`x[..., a:b]`, aten.slice): along another axis every slot keeps its unit
(RoPE's halves of a head, a batch slice); along the unit axis the slice takes those units (the
query part of a fused q/k/v projection), and `slice-units` rewrites its bounds to the kept
count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def slice_dim(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """aten.slice.Tensor(x, dim, start, end, step)."""
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    ndim = len(shape_of(node.args[0]))
    dim, start, end, step = (*node.args[1:], *(0, None, None, 1)[len(node.args) - 1 :])[:4]
    return _take(walk, node, layout, dim % ndim, slice(start, end, step))


def select(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """x.select(dim, i) (`x[:, 0]` under torch.export: a class token): along another axis the
    units stay, one axis earlier when the dropped axis came before theirs."""
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
    dim %= len(shape_of(node.args[0]))
    if dim == layout.axis:
        walk.freeze(layout.ids, "one unit selected along the unit axis")
        return None
    return Layout(layout.axis - (dim < layout.axis), layout.ids)


def only_slices(index) -> bool:
    """True for an index of slices and at most one Ellipsis (no ints, None or tensors)."""
    index = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, slice) or i is Ellipsis for i in index) and index.count(...) <= 1


def getitem_slices(walk: Propagation, node: Node, layout: Layout) -> Layout | None:
    """`x[index]` where `only_slices(index)`."""
    index = full_index(node.args[1], len(shape_of(node.args[0])))
    return _take(walk, node, layout, layout.axis, index[layout.axis])


def _take(walk: Propagation, node: Node, layout: Layout, dim: int, bounds: slice):
    if dim != layout.axis:
        return layout  # a slice of a constant is that constant
    if any(isinstance(b, Node) for b in (bounds.start, bounds.stop, bounds.step)):
        return walk.cannot_slice(node)
    if bounds.step not in (None, 1):
        walk.freeze(layout.ids, "strided slice along the unit axis")
        return None
    walk.splits.append(node.name)
    return Layout(layout.axis, layout.ids[bounds])


def full_index(index, ndim: int) -> tuple:
    """`index` (slices and at most one Ellipsis) as one slice per dim."""
    index = index if isinstance(index, tuple) else (index,)
    if ... in index:
        at = index.index(...)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1 :]
    return index + (slice(None),) * (ndim - len(index))
