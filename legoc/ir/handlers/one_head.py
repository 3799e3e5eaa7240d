"""A one-head split, `view(B, T, 1, d)`, on its way into attention: the head is one unit.

Multi-query attention (Gemma: one key/value head shared by every query head) and one-head
layers split their k/v projection into a single head. Kept as d channel units along head_dim,
RoPE's per-position multiply (`k * cos`) would freeze them (a removed channel times a table
that varies along the channels is no longer a constant); as one unit along the size-1 head
axis it passes RoPE like any head, is broadcast over the query heads by `repeat_kv`
(expand + reshape repeat the unit), and attention couples it with every query head it serves.
That is the exact unit: a query head alone cannot go while the shared KV head is kept (its
scores still depend on the input), and the KV head cannot go while any query head is kept, so
an MQA layer's heads are removed together. Coupling all d channels is never wrong, only
coarser; it is done only for a split that reaches an attention op."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx import Node

from legoc.ir.handlers.head_bias import one_unit
from legoc.ir.units import Layout
from legoc.ir.vocabulary import CONV_OPS, LINEAR_OPS

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

ATTENTION = {F.scaled_dot_product_attention, torch.ops.aten.scaled_dot_product_attention.default}
_LOOKAHEAD = 48  # nodes searched after the split for the attention it feeds (RoPE, repeat_kv)


def one_head(walk: Propagation, node: Node, layout: Layout, in_shape, out_shape) -> Layout | None:
    """Layout(head axis, [unit]) when `node` inserts a size-1 head axis right before the unit
    axis (the last one) of a tensor that reaches attention as q, k or v; None otherwise."""
    last = len(out_shape) - 1
    if (
        len(out_shape) != len(in_shape) + 1
        or len(out_shape) < 3
        or out_shape[last] != in_shape[layout.axis]
        or layout.axis != len(in_shape) - 1
        or out_shape[last - 1] != 1
        or not _reaches_attention(node)
    ):
        return None
    ids = one_unit(walk, layout.ids)
    if (ids < 0).any():
        return None  # one_unit froze them: a channel that is not a unit
    return Layout(last - 1, np.array([ids[0]]))


def _reaches_attention(node: Node) -> bool:
    seen: set[str] = set()
    frontier = [node]
    while frontier and len(seen) < _LOOKAHEAD:
        current = frontier.pop(0)
        for user in current.users:
            if user.target in ATTENTION and current in user.args[:3]:
                return True
            if user.target in LINEAR_OPS or user.target in CONV_OPS:
                continue  # a new layer: its attention is not this split's
            if user.name not in seen:
                seen.add(user.name)
                frontier.append(user)
    return False
