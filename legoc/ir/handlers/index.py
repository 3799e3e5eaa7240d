"""Basic indexing (`x[:, 0]`, `x[..., 1:]`, `x[:, None]`) that leaves the unit axis whole: the
units move to wherever that axis lands (a class token read off the token axis keeps them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def index(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None or node.args[0] not in tracked:
        return walk.cannot_slice(node)
    entries = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if not all(e is None or e is Ellipsis or isinstance(e, (int, slice)) for e in entries):
        return walk.cannot_slice(node)  # tensor indices gather along some axis
    ndim = len(shape_of(node.args[0]))
    consumed = sum(1 for e in entries if e is not None and e is not Ellipsis)
    expanded: list = []
    for e in entries:
        expanded.extend([slice(None)] * (ndim - consumed) if e is Ellipsis else [e])
    if Ellipsis not in entries:
        expanded.extend([slice(None)] * (ndim - consumed))
    in_dim = out_dim = 0
    for e in expanded:
        if e is None:
            out_dim += 1
            continue
        if in_dim == layout.axis:
            if e != slice(None):
                walk.freeze(layout.ids, "indexed along the unit axis")
                return None
            return Layout(out_dim, layout.ids)
        in_dim += 1
        out_dim += 0 if isinstance(e, int) else 1
    return walk.cannot_slice(node)
