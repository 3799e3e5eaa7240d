"""`fold-batch-norm`: merge an inference-mode BatchNorm into the Conv/Linear that feeds it.

y = scale * (W x + b - mean) + beta with scale = gamma / sqrt(var + eps) is the same function
as (scale * W) x + scale * (b - mean) + beta, so the block stores one layer instead of two. A
folded ablation constant added between the two (`fold-ablations` puts it there) is scaled too.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F

from legoc.ir import ops
from legoc.ir.analysis import CONV_OPS, LINEAR_OPS, get_attr_tensor
from legoc.ir.core import IR
from legoc.ir.graph import arg
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.graph_edit import add_tensor, clone_ir, set_arg, set_tensor


def _param(gm, node):
    return get_attr_tensor(gm, node.target).detach() if isinstance(node, torch.fx.Node) else None


def _foldable(node: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node | None] | None:
    """(producer, constant-add or None) when `node` is a BatchNorm right after a producer."""
    if node.op != "call_function" or node.target is not F.batch_norm:
        return None
    if any(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in node.args[1:5]):
        return None
    source, added = node.args[0], None
    if (
        source.op == "call_function"
        and source.target is operator.add
        and isinstance(source.args[1], torch.fx.Node)
        and len(source.users) == 1
        and (source.args[1].op == "get_attr" or source.args[1].target is ops.constant_channel_conv)
    ):
        source, added = source.args[0], source
    if (
        source.op != "call_function"
        or source.target not in (*LINEAR_OPS, *CONV_OPS)
        or len(source.users) != 1
        or source.args[1].op != "get_attr"
    ):
        return None
    if source.target in LINEAR_OPS and len(source.meta["tensor_meta"].shape) != 2:
        return None  # BatchNorm1d over (N, C, L) would normalise a Linear's positions
    return source, added


@dataclass(frozen=True)
class FoldBatchNorm:
    name = "fold-batch-norm"
    kind = "rewrite"

    def run(self, ir: IR, ctx: PassContext | None = None) -> PassResult:
        out = clone_ir(ir)
        gm = out.gm
        folded = 0
        for node in list(gm.graph.nodes):
            match = _foldable(node)
            if match is None:
                continue
            producer, added = match
            mean, var, gamma, beta = (_param(gm, a) for a in node.args[1:5])
            eps = node.args[7]
            scale = (gamma if gamma is not None else 1.0) / torch.sqrt(var + eps)
            shift = (beta if beta is not None else 0.0) - mean * scale
            weight = _param(gm, producer.args[1])
            shape = [-1] + [1] * (weight.dim() - 1)
            set_tensor(gm, producer.args[1], weight * scale.reshape(shape))
            bias_node = arg(producer, 2, "bias")
            bias = _param(gm, bias_node) if bias_node is not None else torch.zeros_like(mean)
            new_bias = bias * scale + shift
            if bias_node is None:
                target = add_tensor(
                    gm,
                    f"{producer.args[1].target.rsplit('.', 1)[0]}.legoc_bias",
                    new_bias,
                    as_parameter=True,
                )
                with gm.graph.inserting_before(producer):
                    set_arg(producer, 2, "bias", gm.graph.get_attr(target))
            else:
                set_tensor(gm, bias_node, new_bias)
            if added is not None:
                term = added.args[1]
                if term.op == "get_attr":  # a stored (1, C, ...) map
                    constant = _param(gm, term)
                    set_tensor(
                        gm, term, constant * scale.reshape([-1] + [1] * (constant.dim() - 2))
                    )
                else:  # a constant_channel_conv: scale its kernel's output channels
                    kernel = _param(gm, term.args[1])
                    set_tensor(gm, term.args[1], kernel * scale.reshape(shape))
            node.replace_all_uses_with(added if added is not None else producer)
            gm.graph.erase_node(node)
            folded += 1
        if folded:
            gm.graph.eliminate_dead_code()
            gm.graph.lint()
            gm.recompile()
            out.refresh()
        return PassResult(out, {"batch_norms_folded": folded}, changed=folded > 0)
