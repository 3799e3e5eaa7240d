"""The op vocabulary: which kind of op each traced node applies.

A node's *kind* picks its handler in `legoc.ir.handlers`. `KINDS` is the one table of the ops
legoc understands: to teach it an op of an existing kind, add the op to that kind's entry; for
a new kind, add an entry here and a handler there. An op of no kind freezes the units it reads.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.ir import group_norm, ops
from legoc.ir.graph import arg, get_attr_tensor

Node = torch.fx.Node
aten = torch.ops.aten

LINEAR_OPS = {F.linear}
CONV_OPS = {F.conv1d: 1, F.conv2d: 2}
# a lookup table's columns are units (its output's last axis); op -> the weight's argument
EMBEDDING_OPS = {F.embedding: 1, aten.embedding.default: 0}


@dataclass(frozen=True)
class Ops:
    """The ops of one kind, as torch.fx calls them."""

    functions: frozenset = frozenset()  # call_function targets
    methods: frozenset = frozenset()  # call_method names
    modules: tuple[type[nn.Module], ...] = ()  # call_module types (subclasses included)


def _ops(functions=(), methods=(), modules=()) -> Ops:
    return Ops(frozenset(functions), frozenset(methods), tuple(modules))


KINDS: dict[str, Ops] = {
    # element-wise: maps constants to constants, keeps every slot where it was
    "unary": _ops(
        functions=[
            F.relu,
            torch.relu,
            F.gelu,
            F.silu,
            torch.tanh,
            F.tanh,
            torch.sigmoid,
            F.sigmoid,
            F.leaky_relu,
            F.elu,
            F.relu6,
            F.hardtanh,
            F.dropout,
            F.alpha_dropout,
            F.hardswish,
            F.hardsigmoid,
            F.mish,
            F.softplus,
            F.selu,
            F.celu,
            F.logsigmoid,
            F.softsign,
            torch.neg,
            operator.neg,
            torch.ops.aten.neg.default,
            # torch.export's casts (GPT-2's and T5's embeddings to the model's dtype)
            aten.to.dtype,
            aten.to.dtype_layout,
            aten._to_copy.default,
        ],
        methods=["relu", "sigmoid", "tanh", "contiguous", "clone", "detach", "to", "float", "neg"],
        modules=[
            nn.ReLU,
            nn.GELU,
            nn.SiLU,
            nn.Tanh,
            nn.Sigmoid,
            nn.LeakyReLU,
            nn.ELU,
            nn.ReLU6,
            nn.Hardtanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Mish,
            nn.Softplus,
            nn.SELU,
            nn.CELU,
            nn.LogSigmoid,
            nn.Softsign,
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
            nn.Identity,
        ],
    ),
    "pool": _ops(
        functions=[
            F.max_pool1d,
            F.max_pool2d,
            F.avg_pool1d,
            F.avg_pool2d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_max_pool1d,
            F.adaptive_max_pool2d,
        ],
        modules=[
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
        ],
    ),
    "batch_norm": _ops(functions=[F.batch_norm]),
    # a norm over the unit axis: its statistics fold the removed channels' constants
    "layer_norm": _ops(functions=[F.layer_norm, F.rms_norm, torch.rms_norm, ops.held_norm]),
    "carried_norm": _ops(functions=[ops.carried_norm]),
    # statistics per group of channels: folded like a layer norm, or whole groups coupled
    "group_norm": _ops(functions=[F.group_norm, group_norm.held_group_norm]),
    "carried_group_norm": _ops(functions=[group_norm.carried_group_norm]),
    "binary": _ops(
        functions=[
            operator.add,
            operator.sub,
            operator.mul,
            operator.truediv,
            torch.add,
            torch.sub,
            torch.mul,
            torch.div,
        ],
        methods=["add", "sub", "mul", "div"],
    ),
    "cat": _ops(functions=[torch.cat]),
    "reshape": _ops(
        functions=[torch.flatten, torch.reshape],
        methods=["view", "reshape", "flatten"],
        modules=[nn.Flatten],
    ),
    "reduce": _ops(
        functions=[torch.mean, torch.sum, torch.amax, torch.amin],
        methods=["mean", "sum", "amax", "amin"],
    ),
    "permute": _ops(
        functions=[torch.permute, torch.transpose, torch.swapaxes],
        methods=["permute", "transpose", "swapaxes"],
    ),
    # a cyclic shift along positions (Swin's shifted windows): every slot keeps its unit
    "roll": _ops(functions=[torch.roll, aten.roll.default], methods=["roll"]),
    # zero padding along positions: followed only where it pads a layer norm's output
    "pad": _ops(functions=[F.pad, aten.pad.default, aten.constant_pad_nd.default]),
    "select_outputs": _ops(functions=[ops.select_outputs]),
    "attention": _ops(functions=[F.scaled_dot_product_attention]),
    "split": _ops(
        functions=[torch.split, torch.chunk, torch.unbind, aten.chunk.default, aten.unbind.int],
        methods=["split", "chunk", "unbind"],
    ),
    "slice": _ops(functions=[aten.slice.Tensor, ops.slice_axis]),  # getitem slices: "getitem"
    "select": _ops(functions=[aten.select.int, torch.select], methods=["select"]),
    "unsqueeze": _ops(functions=[torch.unsqueeze, aten.unsqueeze.default], methods=["unsqueeze"]),
    "expand": _ops(methods=["expand"]),  # lowering turns aten.expand into the method
    "gather_heads": _ops(functions=[ops.gather_heads]),  # sliced GQA: KV head per query head
    # attention written out: q @ kᵀ starts scores, p @ v ends them (handlers/attention_scores)
    "matmul": _ops(
        functions=[torch.matmul, torch.bmm, torch.baddbmm, torch.einsum, operator.matmul],
        methods=["matmul", "bmm", "baddbmm"],
    ),
    "softmax": _ops(functions=[F.softmax, torch.softmax], methods=["softmax"]),
    "getitem": _ops(functions=[operator.getitem]),  # a part of a split, or else unsupported
    # reads only the shape of its input (constant_channel_conv: see legoc.ir.ops); new_zeros
    # and new_ones only its dtype and device too (Swin's attention mask); torch.export's
    # metadata assertion (after an embedding lookup) checks them and returns nothing
    "size": _ops(
        functions=[
            ops.constant_channel_conv,
            ops.token_constant,
            aten._assert_tensor_metadata.default,
        ],
        methods=["size", "dim", "new_zeros", "new_ones"],
    ),
}

_FUNCTIONS = {f: kind for kind, o in KINDS.items() for f in o.functions}
_METHODS = {m: kind for kind, o in KINDS.items() for m in o.methods}
_MODULES = [(types, kind) for kind, o in KINDS.items() for types in [o.modules] if types]


def producer_weight(node: Node):
    """The weight argument of a Linear/Conv/embedding node (an embedding's comes first in
    aten's signature)."""
    at = EMBEDDING_OPS.get(node.target, 1)
    return node.args[at] if len(node.args) > at else None


def producer_kind(gm: torch.fx.GraphModule, node: Node) -> str | None:
    """'linear'/'conv1d'/'conv2d' when `node` applies a parameter weight we can slice;
    'grouped_conv1d'/'grouped_conv2d' for a grouped (e.g. depthwise) conv, whose units are
    removed a whole group at a time together with the input channels the group reads;
    'embedding' for a lookup table (its columns are units: a token's features)."""
    if node.op != "call_function" or len(node.args) < 2:
        return None
    weight = producer_weight(node)
    if not (isinstance(weight, Node) and weight.op == "get_attr"):
        return None
    if node.target in EMBEDDING_OPS:
        plain = node.target is aten.embedding.default or arg(node, 3, "max_norm") is None
        return "embedding" if plain and get_attr_tensor(gm, weight.target).dim() == 2 else None
    if node.target in LINEAR_OPS:
        return "linear"
    if node.target in CONV_OPS:
        grouped = "grouped_" if conv_groups(node) != 1 else ""
        return f"{grouped}conv{CONV_OPS[node.target]}d"
    return None


def conv_groups(node: Node) -> int:
    if len(node.args) > 6:
        return int(node.args[6])
    return int(node.kwargs.get("groups", 1))


def bias_target(node: Node) -> str | None:
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    return bias.target if isinstance(bias, Node) and bias.op == "get_attr" else None


def classify(gm: torch.fx.GraphModule, node: Node) -> str | None:
    """The kind of op `node` applies: "producer" for a Linear/Conv whose weight legoc can
    slice, else a key of `KINDS`, or None for an op legoc cannot slice through."""
    if producer_kind(gm, node) is not None:
        return "producer"
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return next((kind for types, kind in _MODULES if isinstance(module, types)), None)
    if node.op == "call_method":
        return _METHODS.get(node.target)
    if node.op != "call_function":
        return None
    target = node.target
    if target is torch.pow and isinstance(node.args[1], (int, float)):
        return "unary"  # an element-wise power maps constants to constants
    if target is getattr:
        return "size" if node.args[1] in ("shape", "dtype", "device", "ndim") else None
    return _FUNCTIONS.get(target)
