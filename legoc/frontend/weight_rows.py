"""A weight split into row ranges that separate linears apply: each range its own producer.

`F.multi_head_attention_forward` with a key/value memory other than the query (cross
attention) splits the fused `in_proj_weight` (and bias) into the query rows and the key/value
rows and applies each to its own input. The analysis only knows a linear whose weight is a
parameter, so the ranges would freeze. Here each range becomes a child module of the weight's
owner (`legoc.ir.weight_rows.rows_module`) holding a copy of its rows (and of the bias's same
rows): the same values, so every linear computes what it did, and each range's rows are units;
blocks name them back as rows of the source module. A split that any other op reads, or one
whose ranges are not all linear weights, is left as it was (its units then freeze).
"""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F

from legoc.ir.graph import get_attr_tensor
from legoc.ir.weight_rows import rows_module

aten = torch.ops.aten
Node = torch.fx.Node
_SPLITS = {aten.split_with_sizes.default, aten.split.Tensor, torch.split}


def split_weight_rows(gm: torch.fx.GraphModule) -> int:
    """Give every row range of a split weight its own module; returns how many ranges."""
    done = 0
    split_targets: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "get_attr" or len(node.users) != 1:
            continue
        ranges = _row_ranges(gm, node)
        if ranges is None:
            continue
        biases = {}
        for part, (start, stop) in ranges.items():
            linear = next(iter(part.users))
            if linear.args[1] is not part:  # a split bias: handled with its weight
                break
            bias = linear.args[2] if len(linear.args) > 2 else linear.kwargs.get("bias")
            if bias is not None:
                source = _split_source(bias)
                bias_ranges = _row_ranges(gm, source) if source is not None else None
                if bias_ranges is None or bias_ranges.get(bias) != (start, stop):
                    break
                biases[part] = bias
        else:
            done += _give_modules(gm, node, ranges, biases)
            split_targets |= {node.target, *(_split_source(b).target for b in biases.values())}
    if done:
        gm.graph.eliminate_dead_code()
        read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
        for target in split_targets - read:  # the fused weights, now read by no node
            owner_path, _, attr = target.rpartition(".")
            delattr(gm.get_submodule(owner_path) if owner_path else gm, attr)
        gm.recompile()
    return done


def _split_source(node) -> Node | None:
    if not (isinstance(node, Node) and node.target is operator.getitem):
        return None
    split = node.args[0]
    if not (isinstance(split, Node) and split.target in _SPLITS):
        return None
    source = split.args[0]
    return source if isinstance(source, Node) and source.op == "get_attr" else None


def _row_ranges(gm, attr: Node) -> dict[Node, tuple[int, int]] | None:
    """getitem part -> its rows, when `attr` is split along dim 0 and every part is the
    weight (or bias) of one F.linear; None otherwise."""
    if len(attr.users) != 1:
        return None
    split = next(iter(attr.users))
    if split.target not in _SPLITS or split.args[0] is not attr:
        return None
    dim = split.args[2] if len(split.args) > 2 else split.kwargs.get("dim", 0)
    rows = get_attr_tensor(gm, attr.target).shape[0]
    sizes = split.args[1]
    if dim != 0:
        return None
    if isinstance(sizes, int):
        sizes = [min(sizes, rows - s) for s in range(0, rows, sizes)]
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) for s in sizes):
        return None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    ranges = {}
    for part in split.users:
        if part.target is not operator.getitem or len(part.users) != 1:
            return None
        user = next(iter(part.users))
        if user.target is not F.linear or part not in (*user.args[1:3], user.kwargs.get("bias")):
            return None
        ranges[part] = (starts[part.args[1]], starts[part.args[1]] + sizes[part.args[1]])
    return ranges


def _give_modules(gm, weight: Node, ranges: dict, biases: dict) -> int:
    owner_path, _, attr = weight.target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    total = get_attr_tensor(gm, weight.target).shape[0]
    for part, (start, stop) in ranges.items():
        child = torch.nn.Module()
        name = rows_module(attr, start, total)
        owner.add_module(name, child)
        prefix = f"{owner_path}.{name}" if owner_path else name
        _rows_param(gm, child, "weight", weight, start, stop, part, prefix)
        if part in biases:
            bias = biases[part]
            _rows_param(gm, child, "bias", _split_source(bias), start, stop, bias, prefix)
    return len(ranges)


def _rows_param(gm, child, field: str, source: Node, start: int, stop: int, part: Node, prefix):
    tensor = get_attr_tensor(gm, source.target)
    rows = tensor.detach()[start:stop].clone()
    if isinstance(tensor, torch.nn.Parameter):
        rows = torch.nn.Parameter(rows, requires_grad=tensor.requires_grad)
    setattr(child, field, rows)
    with gm.graph.inserting_before(part):
        new = gm.graph.get_attr(f"{prefix}.{field}")
    new.meta = dict(part.meta)
    part.replace_all_uses_with(new)
