"""Normalisations. Batch norm is per channel: its scale, shift and statistics are sliced with
the units. A layer or RMS norm over the unit axis mixes its channels only through two numbers
per position (mean and variance): a removed channel holds its ablation constant, so those stay
computable from the kept channels plus folded constants (`legoc.ir.ops.carried_norm`). Its
output is not constant on removed channels, though (the constant is normalised by the kept
channels' statistics): what a reader receives there is rebuilt from a few carrier channels, so
only Linear/Conv readers, reached through ops that move values without changing them, may read
it (`follow`).

A norm whose output is read by anything else (a residual add: BERT's post-LN stream, ConvNeXt's
and Swin's stem) *restates* its units instead of freezing them: its output is a unit space of
its own (kind "norm", named by the norm's module), coupled one to one with its input, so a
removed channel is ablated after the norm too. Its statistics still fold the removed inputs'
constants, and its removed outputs are constants its readers fold, so no carrier is needed
(`ops.carried_norm(..., carries=False)`). The walk finds such norms on a first pass and the
analysis runs again with them restated (`legoc.ir.analysis.analyze`). Group norm is
`group_norm`'s; norms over several axes still freeze."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from legoc.ir import ops
from legoc.ir.graph import arg, get_attr_tensor, module_name_of, op_name, shape_of
from legoc.ir.units import ChannelParam, Layout, UnitSpace

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

RMS_NORMS = {F.rms_norm, torch.rms_norm}
# ops between a norm and its readers that move values without changing them (a zero pad adds
# zeros that reach the reader as zeros on both sides: handlers/pad.py)
_MOVERS = {"permute", "reshape", "getitem", "slice", "select", "roll", "pad"}
_IDENTITY_FUNCTIONS = {F.dropout, F.alpha_dropout}
_IDENTITY_METHODS = {"contiguous", "clone", "detach"}
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
# linear and alike on every channel: sums and means over positions, average pooling
_AVERAGES = {
    torch.mean,
    torch.sum,
    "mean",
    "sum",
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
}
_AVERAGE_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def batch_norm(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    if layout.axis != 1:
        walk.freeze_inputs(node, "batch_norm over a non-channel axis")
        return None
    for param in node.args[1:5]:
        if isinstance(param, Node) and param.op == "get_attr":
            walk.channel_params.append(ChannelParam(param.target, node.name, 0, layout.ids))
    return layout


def norm_args(node: Node) -> tuple[Node | None, Node | None, bool]:
    """(weight, bias, is_rms) of a layer_norm / rms_norm / held_norm / carried_norm node."""
    if node.target is ops.held_norm:
        return node.args[1], node.args[2], node.args[6]
    if node.target is ops.carried_norm:
        return node.args[1], node.args[2], node.args[7]
    args = [*node.args, None, None, None, None][:5]
    if node.target in RMS_NORMS:
        return args[2] if len(node.args) > 2 else node.kwargs.get("weight"), None, True
    weight = args[2] if len(node.args) > 2 else node.kwargs.get("weight")
    bias = args[3] if len(node.args) > 3 else node.kwargs.get("bias")
    return weight, bias, False


def layer_norm(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    layout = walk.sole_layout(node, tracked)
    if layout is None:
        return walk.cannot_slice(node)
    ndim = len(shape_of(node.args[0]))
    name = op_name(node)
    normalized = node.args[1] if node.target is not ops.held_norm else (shape_of(node)[-1],)
    if isinstance(normalized, int):
        normalized = (normalized,)
    if layout.axis != ndim - 1 or len(normalized) != 1:
        walk.freeze(layout.ids, f"{name} over several axes, the units' among them")
        return None
    if node.args[0].name in walk.normed:
        want_restated(walk, walk.normed[node.args[0].name])
        walk.freeze(layout.ids, f"{name} of a norm's output over the same units")
        return None
    if node.name in walk.restated:
        return restate(walk, node, layout)
    weight, bias, _ = norm_args(node)
    if not affine_params_sliced(walk, node, layout, (weight, bias)):
        return None
    walk.normed[node.name] = node.name
    return layout


_RESTATABLE = {F.layer_norm, *RMS_NORMS, ops.held_norm}


def restatable(gm, node: Node, weight_uses: dict[int, list[str]]) -> bool:
    """Whether `node` is a norm over the last axis whose output may be a unit space of its own:
    its scale (and shift) are weights of the right size that nothing else reads. A sliced
    norm without carriers (`carries=False`) is always one: it was restated before slicing."""
    if node.op != "call_function":
        return False
    if node.target is ops.carried_norm:
        if node.kwargs.get("carries", True):
            return False
    elif node.target not in _RESTATABLE:
        return False
    elif node.target is F.layer_norm:
        normalized = arg(node, 1, "normalized_shape")
        if not isinstance(normalized, int) and len(normalized) != 1:
            return False
    weight, bias, _ = norm_args(node)
    params = [p for p in (weight, bias) if p is not None]
    if not isinstance(weight, Node) or any(
        not isinstance(p, Node) or p.op != "get_attr" for p in params
    ):
        return False
    shape = shape_of(node)
    for param in params:
        tensor = get_attr_tensor(gm, param.target)
        if shape is None or tensor.dim() != 1 or tensor.shape[0] != shape[-1]:
            return False
        if weight_uses.get(id(tensor), []) != [node.name]:
            return False
    return True


def restated_space(node: Node, offset: int) -> UnitSpace:
    """The unit space a restating norm's output holds: one unit per channel."""
    weight, bias, _ = norm_args(node)
    return UnitSpace(
        name=module_name_of(weight.target),
        node=node.name,
        kind="norm",
        size=int(shape_of(node)[-1]),
        offset=offset,
        weight=weight.target,
        bias=bias.target if bias is not None else None,
    )


def want_restated(walk: Propagation, norm: str) -> None:
    """Ask the analysis to run again with `norm` restating its units, where it can."""
    node = walk.nodes[norm]
    if restatable(walk.gm, node, walk.weight_uses):
        walk.restate_wanted.add(norm)


def restate(walk: Propagation, node: Node, layout: Layout) -> Layout:
    """The norm's output holds its own space's units, slot by slot the input's, coupled with
    them: a removed channel is held at its constant before the norm and after it."""
    space = walk.producer_of[node.name]
    own = np.arange(space.offset, space.offset + space.size)
    walk.read[layout.ids[layout.ids >= 0]] = True  # the statistics read every channel
    walk.couple(layout.ids, own, f"{op_name(node)} restating its units")
    return Layout(layout.axis, own)


def affine_params_sliced(walk: Propagation, node: Node, layout: Layout, params) -> bool:
    """A norm's scale and shift are sliced with its units when they are weights; a computed
    one freezes them (False)."""
    for param in params:
        if isinstance(param, Node) and param.op == "get_attr":
            walk.channel_params.append(ChannelParam(param.target, node.name, 0, layout.ids))
        elif param is not None:
            walk.freeze(layout.ids, f"{op_name(node)} with a computed scale or shift")
            return False
    return True


def carried_norm(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """A norm sliced already: its folded statistics assume the units removed then, so its
    readers' carriers cannot take more. One that restates its units (no carriers) takes more:
    a further removed channel reaches it as a constant, like any norm's input."""
    layout = walk.sole_layout(node, tracked)
    if node.name in walk.restated and layout is not None and layout.axis == len(shape_of(node)) - 1:
        return restate(walk, node, layout)
    walk.freeze_inputs(node, "read by a norm that was sliced already")
    return None


def moves_values(walk: Propagation, node: Node, kind: str | None) -> bool:
    """The op treats every channel alike and linearly (a reader of its output receives
    op(what it would have received), carriers included), or only moves values."""
    if kind in _MOVERS:
        return True
    if kind in ("reduce", "pool"):
        return _averages(walk, node)
    if node.op == "call_function":
        return node.target in _IDENTITY_FUNCTIONS
    if node.op == "call_method":
        return node.target in _IDENTITY_METHODS
    if node.op == "call_module":
        return isinstance(walk.gm.get_submodule(node.target), _IDENTITY_MODULES)
    return False


def _averages(walk: Propagation, node: Node) -> bool:
    if node.op == "call_module":
        return isinstance(walk.gm.get_submodule(node.target), _AVERAGE_MODULES)
    return node.target in _AVERAGES


def follow(
    walk: Propagation, node: Node, kind: str | None, normed: list[Node], layout: Layout | None
) -> Layout | None:
    """After `node`'s handler: a norm's output over units reaches a Linear/Conv as its input
    (a *norm reader*: the norm's carriers feed it), or passes an op that only moves values
    with the units intact; anything else freezes the norm's units."""
    if kind == "size":  # reads the shape only
        return layout
    norm = walk.normed[normed[0].name]
    source = walk.layouts[normed[0].name]
    if kind == "producer" and node.args[0] is normed[0] and len(normed) == 1:
        walk.norm_readers[node.name] = norm
        return layout
    if (
        len(normed) == 1
        and layout is not None
        and moves_values(walk, node, kind)
        and len(layout.ids) == len(source.ids)
        and (layout.ids == source.ids).all()
    ):
        walk.normed[node.name] = norm
        return layout
    for tensor in normed:
        want_restated(walk, walk.normed[tensor.name])
        walk.freeze(
            walk.layouts[tensor.name].ids,
            f"the output of norm {norm} read by {op_name(node)} (only a Linear/Conv, or an op "
            "that moves values on the way to one, may read a norm over units)",
        )
    return layout if kind == "producer" else None  # a producer's own units stay units
