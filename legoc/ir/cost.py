"""What units cost: parameters (weight rows and reader columns, biases, per-unit parameters)
and multiply-accumulates per input row."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch.fx

from legoc.ir.graph import get_attr_tensor, shape_of
from legoc.ir.vocabulary import LINEAR_OPS

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def output_positions(node: torch.fx.Node) -> int:
    """Output positions per row of a Linear/Conv (tokens, pixels): each weight element is
    multiply-accumulated this many times for one input row."""
    shape = shape_of(node)
    if shape is None:
        return 1
    channel = len(shape) - 1 if node.target in LINEAR_OPS else 1
    return int(np.prod([d for i, d in enumerate(shape) if i not in (0, channel)], dtype=np.int64))


def unit_costs(
    gm: torch.fx.GraphModule, walk: Propagation, per_position: bool = False
) -> np.ndarray:
    """Parameters each unit accounts for: weight row, bias, per-unit params, reader columns.
    `per_position`: multiply-accumulates per input row instead (weights only). A weight
    applied several times is counted once in parameters and at every use in MACs."""
    counts = np.zeros(walk.n_units, dtype=np.int64)
    nodes = {n.name: n for n in gm.graph.nodes}
    again = set() if per_position else walk.reapplied
    for space in (s for s in walk.spaces.values() if s.node not in again):
        if per_position and space.kind in ("norm", "embedding"):  # MACs: Linear/Conv only
            continue
        weight = get_attr_tensor(gm, space.weight)
        per_row = weight.numel() // max(weight.shape[0], 1)
        if space.kind == "embedding":  # a unit is a column of the table
            per_row = weight.shape[0]
        if per_position:
            per_row *= output_positions(nodes[space.node])
        elif space.bias:
            per_row += 1
        counts[space.offset : space.offset + space.size] += per_row
    for use in (u for u in walk.consumers if u.node not in again):
        weight = get_attr_tensor(gm, nodes[use.node].args[1].target)
        per_column = weight.numel() // weight.shape[1]
        if per_position:
            per_column *= output_positions(nodes[use.node])
        np.add.at(counts, use.ids[use.ids >= 0], per_column)
    if per_position:
        return counts
    counted = set()  # a per-unit parameter shared by several uses: its slots once
    for param in walk.channel_params:
        if param.target in counted:
            continue
        counted.add(param.target)
        tensor = get_attr_tensor(gm, param.target)
        per_slot = tensor.numel() // tensor.shape[param.dim]
        np.add.at(counts, param.ids[param.ids >= 0], per_slot)
    return counts
