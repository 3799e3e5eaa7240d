"""Scaled dot-product attention over (batch, heads, tokens, head_dim): a head's query, key and
value channels are one unit. Removed together, they are constants: the scores of every query
shift by one constant (softmax ignores it) and the head outputs its value constant, which folds
into the output projection's bias. GQA (a KV head shared by query heads): `shared_kv`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.handlers.head_bias import one_unit, per_head_mask_follows
from legoc.ir.handlers.shared_kv import shared_kv
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def attention(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    q, k, v = node.args[:3]
    layouts = [walk.layouts.get(t.name) if isinstance(t, Node) else None for t in (q, k, v)]
    head_axis = len(shape_of(q)) - 3
    extra = [a for a in node.all_input_nodes if a not in (q, k, v) and a.name in walk.layouts]
    whole_heads = all(
        lay is not None and lay.axis == head_axis and len(lay.ids) == len(layouts[0].ids)
        for lay in layouts
    )
    last = len(shape_of(q)) - 1
    if (
        not extra
        and shape_of(q)[head_axis] == 1
        and all(lay is not None and lay.axis == last for lay in layouts)
    ):  # one head: every q, k and v channel is one unit
        ids = one_unit(walk, np.concatenate([lay.ids for lay in layouts]))
        return Layout(last, ids[-len(layouts[2].ids) :])
    if extra or not whole_heads:
        walk.freeze_inputs(node, "attention over units that are not whole heads")
        return None
    gqa = shared_kv(walk, node, layouts, head_axis)
    if gqa is not None:  # query heads over shared KV heads: each its own unit
        return gqa if per_head_mask_follows(walk, node, head_axis, gqa.ids) else None
    ids = walk.couple(layouts[0].ids, layouts[1].ids, "attention head")
    ids = walk.couple(ids, layouts[2].ids, "attention head")
    if not per_head_mask_follows(walk, node, head_axis, ids):
        return None
    return Layout(head_axis, ids)
