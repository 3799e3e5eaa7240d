"""GQA / MQA: one KV head shared by a group of query heads (`repeat_kv`).

A query head is a unit of its own. It is ablated at its attention output (its slice of the
output projection's input, the space's *site*), where a removed head is one constant that folds
into the projection's bias; ablated at q instead, its output softmax(q̄·k)·v would still depend
on the input. A KV head's k and v channels are one unit that *follows* the query heads reading
it (`Group.follows`): it goes exactly when all of them have gone, and then nothing reads it.
Slicing turns the uniform repeat (unsqueeze, expand, reshape by n_rep) into `gather_heads`, the
kept KV head of each kept query head (the kept groups are uneven).

Anything this cannot prove (q read elsewhere, no single chain of reshapes and transposes from
the attention to a Linear) falls back to one unit per KV head and its query heads
(`legoc.ir.analysis`), which is exact too, only coarser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch.fx import Node

from legoc.ir.graph import get_attr_tensor, shape_of
from legoc.ir.units import Layout, SharedKV
from legoc.ir.vocabulary import LINEAR_OPS, classify

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

_REPEAT = ("unsqueeze", "expand", "reshape", "slice", "gather_heads")
_TO_SITE = ("reshape", "permute")


def shared_kv(
    walk: Propagation, node: Node, layouts: list[Layout], head_axis: int
) -> Layout | None:
    """Query heads as units of their own over shared KV heads, or None when the attention is
    not GQA (every query head has a KV head of its own) or this cannot be proven exact."""
    lq = layouts[0]
    k, v = node.args[1:3]
    if node.name in walk.plain_attention or len(set(lq.ids.tolist())) != len(lq.ids):
        return None
    sources = [_source(walk, t, head_axis) for t in (k, v)]
    if any(s is None for s in sources):
        return None
    (k_src, k_slots, k_rep), (v_src, v_slots, v_rep) = sources
    if not (k_rep or v_rep) or not np.array_equal(k_slots, v_slots):
        return None
    site = _site(walk, node)
    space = _space_of(walk, lq.ids)
    q_shape = shape_of(node.args[0])
    if site is None or space is None or walk.spaces[space].size != q_shape[head_axis] * q_shape[-1]:
        return None  # e.g. a fused q/k/v projection: its query rows are not a space of their own
    k_ids, v_ids = walk.layouts[k_src.name].ids, walk.layouts[v_src.name].ids
    walk.couple(k_ids, v_ids, "shared KV head")
    walk.read[k_ids[k_ids >= 0]] = True
    walk.read[v_ids[v_ids >= 0]] = True
    for arg, src, ids in ((1, k_src, k_ids), (2, v_src, v_ids)):
        walk.shared_kv.append(
            SharedKV(node.name, arg, src.name, head_axis, ids.copy(), k_slots, lq.ids.copy())
        )
    walk.sites[space] = (site.name, node.name)
    return Layout(head_axis, lq.ids.copy())


def _source(walk: Propagation, node: Node, axis: int) -> tuple[Node, np.ndarray, bool] | None:
    """(the tensor of distinct KV heads `node` repeats along `axis`, slot -> its slot, whether
    it is a repeat), walking back through repeat_kv's ops or a `gather_heads`."""
    shape, ids = shape_of(node), walk.layouts[node.name].ids
    repeated = len(set(ids.tolist())) != len(ids)
    current = node
    for _ in range(8):
        if classify(walk.gm, current) not in _REPEAT or not isinstance(current.args[0], Node):
            return None
        repeated |= classify(walk.gm, current) == "gather_heads"
        current = current.args[0]
        layout = walk.layouts.get(current.name)
        other = shape_of(current)
        if (
            layout is not None
            and other is not None
            and len(other) == len(shape)
            and layout.axis == axis
            and other[:axis] == shape[:axis]
            and other[axis + 1 :] == shape[axis + 1 :]
            and len(set(layout.ids.tolist())) == len(layout.ids)
            and set(ids.tolist()) <= set(layout.ids.tolist())
        ):
            slot = {int(u): i for i, u in enumerate(layout.ids)}
            return current, np.array([slot[int(u)] for u in ids]), repeated
    return None


def _site(walk: Propagation, node: Node) -> Node | None:
    """The output projection's input the attention output reaches through a chain of
    reshapes and transposes, each read by nothing else."""
    current = node
    for _ in range(8):
        users = list(current.users)
        if len(users) != 1:
            return None
        user, kind = users[0], classify(walk.gm, users[0])
        if kind == "producer" and user.target in LINEAR_OPS and user.args[0] is current:
            return current
        if kind not in _TO_SITE and user.target != "contiguous":
            return None
        current = user
    return None


def _space_of(walk: Propagation, ids: np.ndarray) -> str | None:
    """The one space all the query head ids lie in."""
    names = set()
    for space in walk.spaces.values():
        inside = (ids >= space.offset) & (ids < space.offset + space.size)
        if inside.any():
            names.add(space.name)
    return names.pop() if len(names) == 1 and (ids >= 0).all() else None


def gather_heads(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """A sliced GQA's gather of KV heads: slot i holds input slot index[i]."""
    layout = walk.sole_layout(node, tracked)
    index = node.args[2]
    axis = node.args[1] % len(shape_of(node))
    if layout is None or layout.axis != axis or not isinstance(index, Node):
        return walk.cannot_slice(node)
    positions = get_attr_tensor(walk.gm, index.target).cpu().numpy()
    return Layout(axis, layout.ids[positions])
