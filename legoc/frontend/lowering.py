"""Rewrite torch.export (aten-level) graphs into the functional ops the analysis knows.

torch.fx traces to `F.linear`, `F.conv2d`, `torch.relu`, ...; graphs from torch.export (an
ExportedProgram file, or models fx cannot trace) use aten overloads instead. Mapping the common
ones back gives every later pass one vocabulary. Unknown aten ops stay as they are: the analysis
then freezes the units they read, which is safe.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F

from legoc.frontend.constants import fold_built_constants
from legoc.frontend.unfold_batch_heads import unfold_batch_heads
from legoc.frontend.unfold_heads import unfold_mha_heads
from legoc.frontend.weight_rows import split_weight_rows
from legoc.ir.ops import slice_axis

aten = torch.ops.aten


def _batch_norm(args):
    # aten: (input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    x, weight, bias, mean, var, _training, momentum, eps = args[:8]
    return (x, mean, var, weight, bias, False, momentum, eps)  # blocks are for inference


SAME_ARGS = {
    aten.linear.default: F.linear,
    aten.conv1d.default: F.conv1d,
    aten.conv2d.default: F.conv2d,
    aten.relu.default: torch.relu,
    aten.gelu.default: F.gelu,
    aten.silu.default: F.silu,
    aten.hardswish.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid,
    aten.mish.default: F.mish,
    aten.tanh.default: torch.tanh,
    aten.sigmoid.default: torch.sigmoid,
    aten.add.Tensor: operator.add,
    aten.sub.Tensor: operator.sub,
    aten.mul.Tensor: operator.mul,
    aten.div.Tensor: operator.truediv,
    aten.cat.default: torch.cat,
    aten.flatten.using_ints: torch.flatten,
    aten.max_pool1d.default: F.max_pool1d,
    aten.max_pool2d.default: F.max_pool2d,
    aten.avg_pool1d.default: F.avg_pool1d,
    aten.avg_pool2d.default: F.avg_pool2d,
    aten.adaptive_avg_pool1d.default: F.adaptive_avg_pool1d,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.scaled_dot_product_attention.default: F.scaled_dot_product_attention,
    aten.matmul.default: torch.matmul,
    aten.bmm.default: torch.bmm,
    aten.baddbmm.default: torch.baddbmm,
    aten.mean.dim: torch.mean,
    aten.sum.dim_IntList: torch.sum,
    aten.permute.default: torch.permute,
    aten.split.Tensor: torch.split,
    aten.pow.Tensor_Scalar: torch.pow,
    aten.transpose.int: torch.transpose,
    aten.reshape.default: torch.reshape,
    aten.view.default: torch.reshape,
    aten.roll.default: torch.roll,
}


def _layer_norm(args):
    return tuple(args[:5])  # drops aten's trailing cudnn_enable flag


# ops whose size arguments can be the batch: as Tensor methods / torch functions they accept
# the traced sizes the ONNX exporter passes, where aten overloads demand Python ints
AS_METHOD = {
    aten.expand.default: "expand",
    aten.new_ones.default: "new_ones",
    aten.new_zeros.default: "new_zeros",
}
SAME_ARGS[aten.arange.default] = torch.arange
SAME_ARGS[aten.slice.Tensor] = slice_axis
SAME_ARGS[aten.arange.start] = torch.arange
SAME_ARGS[aten.ones.default] = torch.ones  # DeBERTa's default attention mask: (batch, tokens)

REORDERED = {
    aten.batch_norm.default: (F.batch_norm, _batch_norm),
    aten.layer_norm.default: (F.layer_norm, _layer_norm),
    aten.group_norm.default: (F.group_norm, _layer_norm),  # the same trailing flag
    aten.einsum.default: (torch.einsum, lambda args: (args[0], list(args[1]))),
}
# a tensor constant (`torch.tensor(...)` in forward, DeBERTa's scale) is lifted as
# detach_(lift_fresh_copy(c)): a copy (the ONNX exporter knows no lift_fresh_copy) and an identity
SAME_ARGS[aten.lift_fresh_copy.default] = torch.clone
DROPPED = {
    aten.dropout.default,
    aten.alias.default,
    aten.contiguous.default,
    aten.detach_.default,
}


def is_aten_graph(gm: torch.fx.GraphModule) -> bool:
    return any(isinstance(n.target, torch._ops.OpOverload) for n in gm.graph.nodes)


def _pads_nothing(node: torch.fx.Node) -> bool:
    """A zero-width pad (Swin pads its windows to a multiple of their size: none at 224 px)."""
    pads = node.args[1] if len(node.args) > 1 else None
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    return (
        node.target is aten.pad.default
        and mode == "constant"
        and isinstance(pads, (list, tuple))
        and all(isinstance(p, int) and p == 0 for p in pads)
    )


def lower_aten(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A plain GraphModule (no pytree codegen, no guard calls) with functional ops."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target.startswith("_guards"):
            continue
        if node.op == "call_function" and (node.target in DROPPED or _pads_nothing(node)):
            env[node] = env[node.args[0]]
            continue
        if node.op == "call_function" and node.target is aten.sym_size.int:
            # a method call stays dynamic when the ONNX exporter traces the graph; the aten op
            # would be baked in as the example's batch size
            new = graph.call_method("size", (env[node.args[0]], node.args[1]))
            new.meta = dict(node.meta)
            env[node] = new
            continue
        new = graph.node_copy(node, lambda n: env[n])
        if node.op == "call_function" and node.target in SAME_ARGS:
            new.target = SAME_ARGS[node.target]
        elif node.op == "call_function" and node.target in AS_METHOD:
            new.op, new.target = "call_method", AS_METHOD[node.target]
        elif node.op == "call_function" and node.target in REORDERED:
            target, reorder = REORDERED[node.target]
            new.target, new.args = target, reorder(new.args)
        env[node] = new
    lowered = torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    fold_built_constants(lowered)
    _addmm_to_linear(lowered)
    _mha_heads_visible(lowered)
    split_weight_rows(lowered)
    unfold_mha_heads(lowered)
    unfold_batch_heads(lowered)
    fuse_rms_norm(lowered)
    lowered.graph.eliminate_dead_code()
    lowered.delete_all_unused_submodules()
    lowered.recompile()
    return lowered


def _addmm_to_linear(gm: torch.fx.GraphModule) -> None:
    """`reshape(addmm(b, reshape(x, [-1, n]), W), [..., m])` (GPT-2's Conv1D) is F.linear with
    W transposed: stored transposed under its own name, its output features become units."""
    users_of: dict[str, list[torch.fx.Node]] = {}
    transposed: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            users_of[node.target] = users_of.get(node.target, []) + list(node.users)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.addmm.default:
            continue
        bias, flat, weight = node.args[:3]
        outer = next(iter(node.users)) if len(node.users) == 1 else None
        if (
            node.kwargs
            or not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr")
            or not (isinstance(flat, torch.fx.Node) and flat.target is torch.reshape)
            or outer is None
            or outer.target is not torch.reshape
            or any(u.target is not aten.addmm.default for u in users_of[weight.target])
        ):
            continue
        if weight.target not in transposed:
            owner_path, _, attr = weight.target.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            tensor = getattr(owner, attr)
            flipped = tensor.detach().t().contiguous()
            if isinstance(tensor, torch.nn.Parameter):
                flipped = torch.nn.Parameter(flipped, requires_grad=tensor.requires_grad)
            setattr(owner, attr, flipped)
            transposed.add(weight.target)
        with gm.graph.inserting_before(outer):
            linear = gm.graph.call_function(F.linear, (flat.args[0], weight, bias))
        linear.meta = dict(outer.meta)
        outer.replace_all_uses_with(linear)
        gm.graph.erase_node(outer)
        gm.graph.erase_node(node)


def _node(value, target) -> bool:
    return isinstance(value, torch.fx.Node) and value.target is target


def _mha_heads_visible(gm: torch.fx.GraphModule) -> None:
    """Rewrite torch's multi-head attention (nn.MultiheadAttention on its scaled-dot-product
    path, as in nn.TransformerEncoderLayer) into the shape Hugging Face models have, so heads
    become units: the fused in-projection is split with `torch.split` rather than an
    unflatten/select dance, and heads get their own axis instead of being folded into the
    batch axis. Every rewrite computes the same values; anything else is left as it was."""
    graph = gm.graph
    splits: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in list(graph.nodes):
        if not (_node(node, aten.select.int) and node.args[1] == 0):
            continue
        squeeze = node.args[0]
        if not (_node(squeeze, aten.squeeze.dim) and squeeze.args[1] == -2):
            continue
        swap = squeeze.args[0]
        if not (_node(swap, torch.transpose) and tuple(swap.args[1:]) == (0, -2)):
            continue
        lift = swap.args[0]
        if not (_node(lift, aten.unsqueeze.default) and lift.args[1] == 0):
            continue
        unflat = lift.args[0]
        if not (_node(unflat, aten.unflatten.int) and unflat.args[1] == -1):
            continue
        parts, width = unflat.args[2]
        if parts not in (2, 3):  # q, k, v of one input; or k, v of the memory (cross)
            continue
        if unflat not in splits:
            with graph.inserting_after(unflat):
                splits[unflat] = graph.call_function(torch.split, (unflat.args[0], width, -1))
        with graph.inserting_before(node):
            part = graph.call_function(operator.getitem, (splits[unflat], node.args[2]))
        node.replace_all_uses_with(part)
    for node in list(graph.nodes):  # view(T, B*H, D) -> transpose(0, 1) -> view(B, H, T, D)
        if not _node(node, F.scaled_dot_product_attention):
            continue
        for operand in node.args[:3]:
            if not (_node(operand, torch.reshape) and len(operand.users) == 1):
                continue
            swap = operand.args[0]
            if not (_node(swap, torch.transpose) and tuple(swap.args[1:]) in ((0, 1), (1, 0))):
                continue
            folded = swap.args[0]
            if not (_node(folded, torch.reshape) and len(folded.args[1]) == 3):
                continue
            source, head_dim = folded.args[0], folded.args[1][2]
            if not isinstance(head_dim, int):
                continue
            with graph.inserting_before(operand):
                tokens = graph.call_method("size", (source, 0))
                batch = graph.call_method("size", (source, 1))
                split = graph.call_function(torch.reshape, (source, [tokens, batch, -1, head_dim]))
                heads = graph.call_function(torch.permute, (split, [1, 2, 0, 3]))
            operand.replace_all_uses_with(heads)
        for user in list(node.users):  # permute(2, 0, 1, 3) -> reshape(T*B, E): keep T, B apart
            if not (_node(user, torch.permute) and list(user.args[1]) == [2, 0, 1, 3]):
                continue
            for merge in list(user.users):
                if _node(merge, torch.reshape) and len(merge.args[1]) == 2:
                    with graph.inserting_before(merge):
                        tokens = graph.call_method("size", (user, 0))
                        batch = graph.call_method("size", (user, 1))
                    merge.args = (user, [tokens, batch, -1])
    graph.eliminate_dead_code()


def _is(node, functions=(), methods=()) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def _other(node: torch.fx.Node, one) -> object:
    a, b = node.args[:2]
    return b if a is one else a if b is one else None


def fuse_rms_norm(gm: torch.fx.GraphModule) -> int:
    """`weight * (x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))`, the RMS norm Hugging Face
    models write out (LlamaRMSNorm and its copies), becomes one `F.rms_norm`: the analysis
    folds a norm over units, but not the reduction and division it is written with. Returns
    how many were fused; anything that differs from the pattern is left as it was."""
    fused = 0
    for node in list(gm.graph.nodes):
        if not _is(node, (torch.rsqrt, aten.rsqrt.default), ("rsqrt",)):
            continue
        add = node.args[0]
        if not _is(add, (operator.add, torch.add), ("add",)) or len(add.users) != 1:
            continue
        mean, eps = add.args[:2]
        if not isinstance(eps, float) or not _is(mean, (torch.mean,), ("mean",)):
            continue
        dims = mean.args[1] if len(mean.args) > 1 else mean.kwargs.get("dim")
        keepdim = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
        if list(dims if isinstance(dims, (list, tuple)) else [dims]) != [-1] or not keepdim:
            continue
        square = mean.args[0]
        if not _is(square, (torch.pow,), ("pow",)) or square.args[1] != 2:
            continue
        x = square.args[0]
        scaled = next((u for u in node.users if _is(u, (operator.mul, torch.mul), ("mul",))), None)
        if scaled is None or _other(scaled, node) is not x or len(scaled.users) != 1:
            continue
        prev, out = scaled, next(iter(scaled.users))
        if _is(out, (), ("to",)) and len(out.users) == 1:
            prev, out = out, next(iter(out.users))  # back to the input dtype (float32 here)
        if not _is(out, (operator.mul, torch.mul), ("mul",)) or prev not in out.args[:2]:
            continue
        weight = out.args[1] if out.args[0] is prev else out.args[0]
        if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr"):
            continue
        shape = tuple(_attr(gm, weight.target).shape)
        with gm.graph.inserting_before(out):
            norm = gm.graph.call_function(F.rms_norm, (x, shape, weight, eps))
        norm.meta = dict(out.meta)
        out.replace_all_uses_with(norm)
        fused += 1
    if fused:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return fused


def _attr(gm: torch.nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)
