"""view / reshape / flatten: flattening the unit axis with the dims after it repeats each unit
over its positions; splitting it into (heads, head_dim) couples each head's channels; anything
else across the unit axis freezes the units. A split, a swap of the two parts and a merge back
(ShuffleNet's channel shuffle) is a permutation of the units, followed as one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

from legoc.ir.graph import shape_of
from legoc.ir.handlers.fused_heads import fused_heads
from legoc.ir.handlers.one_head import one_head
from legoc.ir.units import ChannelPermutation, Layout

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
            walk.reshapes.append(node.name)  # a literal size there changes with slicing
            return Layout(axis, np.repeat(layout.ids, inner))
        if len(out_shape) > axis and out_shape[axis] == in_shape[axis]:
            walk.reshapes.append(node.name)
            return layout
        if splits_axis(in_shape, out_shape, axis) and (end := shuffle_end(node, axis)):
            # (g, C/g) -> transpose -> C: a channel shuffle, one permutation of the units
            order = np.arange(in_shape[axis]).reshape(out_shape[axis], -1).T.reshape(-1)
            walk.forwarded[end.name] = Layout(axis, layout.ids[order])
            walk.permutations.append(
                ChannelPermutation(node.name, end.name, axis, order, layout.ids.copy())
            )
            return None
        merged = merged_dims(in_shape, out_shape, axis)
        if merged > 1:  # (kv heads, n_rep) -> query heads: each unit repeated over n_rep
            walk.reshapes.append(node.name)
            return Layout(axis, np.repeat(layout.ids, merged))
        if splits_axis(in_shape, out_shape, axis):  # channels -> (heads, head_dim)
            blocks = layout.ids.reshape(out_shape[axis], out_shape[axis + 1])
            for block in blocks:
                walk.couple(np.full_like(block, block[0]), block, "attention head")
            walk.reshapes.append(node.name)
            return Layout(axis, blocks[:, 0].copy())
    moved = size_one_dims_only(in_shape, out_shape, axis)
    if moved is not None:  # (B, T, C) <-> (B, T, 1, C): one head, its channels stay put
        walk.reshapes.append(node.name)  # ... or become one unit on their way into attention
        return one_head(walk, node, layout, in_shape, out_shape) or Layout(moved, layout.ids)
    if regroups_positions(in_shape, out_shape, axis):  # Swin's window partition and reverse
        walk.reshapes.append(node.name)
        return Layout(len(out_shape) - (len(in_shape) - axis), layout.ids)
    fused = fused_heads(walk, node, layout, in_shape, out_shape)
    if fused is not None:  # channels -> (q/k/v, heads, head_dim), taken apart
        return fused
    walk.freeze(layout.ids, _why_frozen(in_shape, out_shape, axis))
    return None


def _why_frozen(in_shape, out_shape, axis: int) -> str:
    """The freeze reason; heads merged into the batch axis (DeBERTa's `view(-1, T, d)`) named."""
    folded = int(np.prod(in_shape[: axis + 1], dtype=np.int64))
    if axis > 0 and out_shape[0] == folded and tuple(out_shape[1:]) == tuple(in_shape[axis + 1 :]):
        return "attention heads folded into the batch axis: not followed yet"
    return "reshaped across the unit axis"


def size_one_dims_only(in_shape, out_shape, axis: int) -> int | None:
    """The unit axis after a reshape that only inserts or drops size-1 dims (a one-head
    split or merge), or None for any other reshape."""
    if in_shape[axis] == 1 or [d for d in in_shape if d != 1] != [d for d in out_shape if d != 1]:
        return None
    rank = sum(d != 1 for d in in_shape[:axis])
    return [i for i, d in enumerate(out_shape) if d != 1][rank]


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


def shuffle_end(node: Node, axis: int) -> Node | None:
    """The merging reshape of split -> transpose(axis, axis + 1) [-> contiguous] -> merge,
    each step the only user of the one before (nothing else sees the split units)."""
    step = _only_user(node)
    if step is None or not _swaps(step, axis, len(shape_of(node))):
        return None
    step = _only_user(step)
    if step is not None and step.target == "contiguous":
        step = _only_user(step)
    if step is None or step.target not in RESHAPES:
        return None
    return step if shape_of(step) == shape_of(node.args[0]) else None


RESHAPES = (torch.reshape, torch.flatten, "view", "reshape", "flatten")


def _only_user(node: Node) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _swaps(node: Node, axis: int, ndim: int) -> bool:
    if node.target in (torch.transpose, "transpose"):
        return sorted(d % ndim for d in node.args[1:3]) == [axis, axis + 1]
    if node.target in (torch.permute, "permute"):
        dims = node.args[1] if len(node.args) == 2 else node.args[1:]
        perm = list(range(ndim))
        perm[axis], perm[axis + 1] = axis + 1, axis
        return [d % ndim for d in dims] == perm
    return False


def merged_dims(in_shape, out_shape, axis: int) -> int:
    """How many slots each unit gets when a reshape merges dim `axis` with some of the dims
    after it and leaves the rest as they were (1 when it does not)."""
    for end in range(axis + 2, len(in_shape)):
        if list(out_shape[axis + 1 :]) == list(in_shape[end:]) and out_shape[axis] == int(
            np.prod(in_shape[axis:end], dtype=np.int64)
        ):
            return int(np.prod(in_shape[axis + 1 : end], dtype=np.int64))
    return 1
