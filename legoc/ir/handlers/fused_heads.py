"""A fused q/k/v projection reshaped into (parts, heads, head_dim) and taken apart along the
parts axis: Swin's and timm's `qkv(x).reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)`
then `unbind(0)` (or `qkv[0], qkv[1], qkv[2]`, which torch.export writes as selects).

The reshape splits the unit axis in three. Each (part, head) block of head_dim channels is one
unit, as for a two-way head split; the parts axis is then taken apart, so each taken part gets
its own heads along its head axis (decided here, ahead, in `walk.forwarded`), and attention
couples q, k and v head by head. The reshape itself carries the heads of part 0 along its head
axis: `slice-units` writes -1 there (the kept heads), the parts and head_dim stay literals,
and the rows of the projection, ordered (part, head, channel), keep that order when sliced.
Only a chain in which nothing else reads the reshaped tensor is followed."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.fx import Node

from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

_PERMUTES = (torch.permute, torch.transpose, "permute", "transpose")
_UNBIND = (torch.unbind, "unbind", torch.ops.aten.unbind.int)
_SELECT = (torch.ops.aten.select.int, torch.select, "select")


def fused_heads(walk: Propagation, node: Node, layout, in_shape, out_shape) -> Layout | None:
    """The reshape's layout when it splits the unit axis into (parts, heads, head_dim) and
    the parts are taken apart; None when it does not (the caller goes on)."""
    axis = layout.axis
    if not (
        len(out_shape) == len(in_shape) + 2
        and tuple(out_shape[:axis]) == tuple(in_shape[:axis])
        and tuple(out_shape[axis + 3 :]) == tuple(in_shape[axis + 1 :])
        and int(np.prod(out_shape[axis : axis + 3])) == in_shape[axis]
        and out_shape[axis] > 1
    ):
        return None
    parts, heads, width = out_shape[axis : axis + 3]
    taken = _taken_parts(node, axis, axis + 1, len(out_shape))
    if taken is None:
        return None
    blocks = layout.ids.reshape(parts, heads, width)
    for block in blocks.reshape(parts * heads, width):
        walk.couple(np.full_like(block, block[0]), block, "attention head")
    for item, part, head_axis in taken:
        walk.forwarded[item.name] = Layout(head_axis, blocks[part, :, 0].copy())
    walk.reshapes.append(node.name)
    return Layout(axis + 1, blocks[0, :, 0].copy())


def _taken_parts(node: Node, parts_axis: int, head_axis: int, ndim: int):
    """[(getitem node, its part, its head axis)] when `node` reaches only an unbind (or int
    indexing, or selects) along the parts axis, through at most one permute; None otherwise."""
    current = node
    step = _only_user(current)
    if step is not None and step.target in _PERMUTES:
        perm = _perm(step, ndim)
        if perm is None:
            return None
        parts_axis, head_axis = perm.index(parts_axis), perm.index(head_axis)
        current, step = step, _only_user(step)
    head_after = head_axis - (parts_axis < head_axis)
    if step is not None and step.target in _UNBIND:
        dim = step.args[1] if len(step.args) > 1 else step.kwargs.get("dim", 0)
        if dim % ndim != parts_axis:
            return None
        items = list(step.users)
        if not all(i.target is operator.getitem and isinstance(i.args[1], int) for i in items):
            return None
        return [(i, i.args[1], head_after) for i in items]
    items = list(current.users)
    if not items:
        return None
    parts = [_part(i, parts_axis, ndim) for i in items]
    if any(p is None for p in parts):
        return None
    return [(i, p, head_after) for i, p in zip(items, parts)]


def _part(item: Node, parts_axis: int, ndim: int) -> int | None:
    """The part `qkv[i]` (parts first) or `qkv.select(parts_axis, i)` (aten, under
    torch.export) takes; None for any other reader."""
    if item.target is operator.getitem and parts_axis == 0 and isinstance(item.args[1], int):
        return item.args[1]
    if item.target in _SELECT and len(item.args) == 3 and isinstance(item.args[2], int):
        return item.args[2] if item.args[1] % ndim == parts_axis else None
    return None


def _only_user(node: Node) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _perm(node: Node, ndim: int) -> list[int] | None:
    rest = list(node.args[1:])
    if node.target in (torch.transpose, "transpose"):
        if len(rest) < 2 or not all(isinstance(d, int) for d in rest[:2]):
            return None
        a, b = (d % ndim for d in rest[:2])
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
    if len(dims) != ndim or not all(isinstance(d, int) for d in dims):
        return None
    return [d % ndim for d in dims]
