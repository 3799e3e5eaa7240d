"""Group norm over channels (axis 1): statistics per sample and group of channels, then a
per-channel scale and shift. A removed channel holds its ablation constant, so it adds a known
amount to its group's sums at every position; what happens next depends on the norm's readers.

- Read only by Linear/Conv layers (through ops that move values, as `norm.follow` checks):
  each channel is a unit of its own, exactly as a layer norm over units — the statistics fold
  the removed channels' constants and the readers rebuild what the removed channels gave them
  from a few carriers (`legoc.ir.group_norm.carried_group_norm`).
- Read by anything else (a ReLU, a residual add): the norm's output on a removed channel is
  not constant (the constant is normalised by the kept channels' statistics, per sample), so no
  reader could fold it. A group whose channels are all removed has constant statistics and a
  constant output: the channels of each group are coupled, and slicing drops whole groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import op_name
from legoc.ir.handlers.norm import affine_params_sliced, moves_values
from legoc.ir.units import Layout
from legoc.ir.vocabulary import classify

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def group_norm_args(node: Node) -> tuple[int, Node | None, Node | None, float]:
    """(groups, weight, bias, eps) of an `F.group_norm` or `held_group_norm` node."""
    args = [*node.args, None, None, None, None][:5]
    kwargs = node.kwargs
    weight = args[2] if len(node.args) > 2 else kwargs.get("weight")
    bias = args[3] if len(node.args) > 3 else kwargs.get("bias")
    eps = args[4] if len(node.args) > 4 else kwargs.get("eps", 1e-5)
    return int(args[1]), weight, bias, float(eps)


def group_norm(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    name = op_name(node)
    if layout.axis != 1:
        walk.freeze(layout.ids, f"{name} over a non-channel axis")
        return None
    if node.args[0].name in walk.normed:
        walk.freeze(layout.ids, f"{name} of a norm's output over the same units")
        return None
    groups, weight, bias, _ = group_norm_args(node)
    if not affine_params_sliced(walk, node, layout, (weight, bias)):
        return None
    if read_only_by_layers(walk, node):
        walk.normed[node.name] = node.name
        return layout
    why = f"{name} {node.name} (a group's statistics are constant only when all of it goes)"
    for block in layout.ids.reshape(groups, -1):
        for unit in block[1:]:
            walk.couple(block[:1], np.array([unit]), why)
    return layout


def read_only_by_layers(walk: Propagation, node: Node) -> bool:
    """Every use of `node` reaches a Linear/Conv (not grouped) as its input, through ops that
    move values without changing them."""
    stack = [node]
    while stack:
        current = stack.pop()
        for user in current.users:
            kind = classify(walk.gm, user)
            if kind == "size":
                continue
            if kind == "producer":
                space = walk.producer_of.get(user.name)
                if user.args[0] is not current or space is None or space.groups > 1:
                    return False
            elif moves_values(walk, user, kind):
                stack.append(user)
            else:
                return False
    return True
