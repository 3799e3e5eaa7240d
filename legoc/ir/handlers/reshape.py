"""view / reshape / flatten: flattening the unit axis with the dims after it repeats each unit
over its positions; splitting it into (heads, head_dim) couples each head's channels; anything
else across the unit axis freezes the units."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def reshape(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
    axis = layout.axis
    if out_shape[:axis] == in_shape[:axis]:
        inner = int(np.prod(in_shape[axis + 1 :], dtype=np.int64))
        if len(out_shape) > axis and out_shape[axis] == in_shape[axis] * inner:
            if inner > 1 or len(out_shape) != len(in_shape):
                walk.reshapes.append(node.name)
            return Layout(axis, np.repeat(layout.ids, inner))
        if len(out_shape) > axis and out_shape[axis] == in_shape[axis]:
            walk.reshapes.append(node.name)
            return layout
        if splits_axis(in_shape, out_shape, axis):  # channels -> (heads, head_dim)
            blocks = layout.ids.reshape(out_shape[axis], out_shape[axis + 1])
            for block in blocks:
                walk.couple(np.full_like(block, block[0]), block, "attention head")
            walk.reshapes.append(node.name)
            return Layout(axis, blocks[:, 0].copy())
    if regroups_positions(in_shape, out_shape, axis):  # Swin's window partition and reverse
        walk.reshapes.append(node.name)
        return Layout(len(out_shape) - (len(in_shape) - axis), layout.ids)
    walk.freeze(layout.ids, "reshaped across the unit axis")
    return None


def regroups_positions(in_shape, out_shape, axis: int) -> bool:
    """True when a reshape regroups only the dims before the unit axis (same total size), and
    keeps the unit axis and every dim after it: each unit stays whole in its own slot."""
    tail = len(in_shape) - axis
    return (
        len(out_shape) >= tail
        and tuple(out_shape[-tail:]) == tuple(in_shape[axis:])
        and int(np.prod(out_shape[:-tail], dtype=np.int64))
        == int(np.prod(in_shape[:axis], dtype=np.int64))
    )


def splits_axis(in_shape, out_shape, axis: int) -> bool:
    """True when a reshape splits dim `axis` in two and leaves every other dim as it was."""
    return (
        len(out_shape) == len(in_shape) + 1
        and out_shape[:axis] == in_shape[:axis]
        and out_shape[axis] * out_shape[axis + 1] == in_shape[axis]
        and out_shape[axis + 2 :] == in_shape[axis + 1 :]
        and out_shape[axis] > 1
    )
