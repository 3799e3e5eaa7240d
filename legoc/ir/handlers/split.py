"""torch.split / chunk and the getitem nodes that take its parts: each part of a split along
the unit axis gets its slice of the units; a split along another axis hands every part the
same units."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def split(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    """Records the parts' units (`walk.split_parts`); the split node itself carries none."""
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(
        shape_of(node.args[0])
    )
    length = shape_of(node.args[0])[dim]
    sizes = split_sizes(node, length)
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


def is_chunk(node: Node) -> bool:
    return node.target in ("chunk", torch.chunk)


def split_sizes(node: Node, length: int) -> list[int]:
    """The parts' lengths of a split (sizes or one size) or a chunk (a number of parts)."""
    size = node.args[1] if len(node.args) > 1 else node.kwargs.get("chunks")
    if is_chunk(node):
        size = -(-length // size)  # torch.chunk: parts of ceil(length / chunks)
    if isinstance(size, (list, tuple)):
        return list(size)
    return [min(size, length - start) for start in range(0, length, size)]


def getitem(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """A part of a split carries its units; any other indexing of units is not followed."""
    if node.args[0].name in walk.split_parts:
        axis, parts = walk.split_parts[node.args[0].name]
        return Layout(axis, parts[node.args[1]])
    if not tracked:
        return None
    return walk.cannot_slice(node)
