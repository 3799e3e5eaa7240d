"""unsqueeze / expand: a new axis before the units moves them one axis on; expanding another
axis (GQA's `repeat_kv`: one KV head broadcast over its query heads) repeats each slot's unit
along it, which maps constants to constants. `slice-units` writes -1 for the unit axis's size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def unsqueeze(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs["dim"]
    dim %= len(shape_of(node))
    return Layout(layout.axis + 1 if dim <= layout.axis else layout.axis, layout.ids)


def expand(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
    axis = layout.axis + len(out_shape) - len(in_shape)
    if out_shape[axis] != in_shape[layout.axis]:
        walk.freeze(layout.ids, "expanded along the unit axis")
        return None
    walk.reshapes.append(node.name)
    return Layout(axis, layout.ids)
