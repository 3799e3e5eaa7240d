"""Unfold heads that torch's multi-head attention folds into the batch axis on its bmm path.

`nn.MultiheadAttention(need_weights=True)` (and any caller of `F.multi_head_attention_forward`
that asks for the weights) views q, k and v as `(T, B*H, d)`, transposes them to `(B*H, T, d)`
and runs `bmm` / `softmax` / `bmm`. Here each such fold is rewritten, value for value, into
`(B, H, T, d)` with heads on an axis of their own, the bmm's become 4-d matmuls, and the
result goes back as `(T, B, H*d)`: the form the attention handlers follow. Row-major order of
`(B, H, ...)` equals that of `(B*H, ...)`, so every reshape downstream computes what it did.
An attention whose folded tensors meet any other op is left as it was (its heads then freeze).
"""

from __future__ import annotations

import operator

import torch
import torch.fx

aten = torch.ops.aten
Node = torch.fx.Node

_SCALARS = {operator.mul, operator.truediv}
_SOFTMAX = {aten.softmax.int, aten._softmax.default}


def _is(node, target) -> bool:
    return isinstance(node, Node) and node.target is target


def _fold(node: Node) -> tuple[Node, int] | None:
    """`transpose(reshape(src, [T, B*H, d]), 0, 1)`: (src, d) of a heads-into-batch fold."""
    if not (_is(node, torch.transpose) and tuple(node.args[1:]) in ((0, 1), (1, 0))):
        return None
    folded = node.args[0]
    if not (_is(folded, torch.reshape) and len(folded.users) == 1):
        return None
    sizes = folded.args[1]
    if not (isinstance(sizes, (list, tuple)) and len(sizes) == 3 and isinstance(sizes[2], int)):
        return None
    value = folded.args[0].meta.get("val")  # nodes lowering inserted have none: a split's part
    if isinstance(value, torch.Tensor) and value.dim() != 3:
        return None
    return folded.args[0], sizes[2]


def unfold_mha_heads(gm: torch.fx.GraphModule) -> int:
    """Rewrite every bmm attention whose operands are heads folded into the batch axis;
    returns how many folds were unfolded."""
    graph = gm.graph
    folds = {n: f for n in graph.nodes if (f := _fold(n)) is not None}
    done = 0
    for start in list(folds):
        if start.graph is not graph or start not in folds:
            continue
        region, exits = _region(start, folds)
        if region is None:
            continue
        for fold in [n for n in region if n in folds]:
            source, head_dim = folds.pop(fold)
            with graph.inserting_before(fold):
                tokens = graph.call_method("size", (source, 0))
                batch = graph.call_method("size", (source, 1))
                split = graph.call_function(torch.reshape, (source, [tokens, batch, -1, head_dim]))
                heads = graph.call_function(torch.permute, (split, [1, 2, 0, 3]))
            fold.replace_all_uses_with(heads)
            done += 1
        for node in region:
            if node.target is torch.bmm:
                node.target = torch.matmul
            elif node.target in _SOFTMAX and node.args[1] >= 0:
                node.args = (node.args[0], node.args[1] + 1, *node.args[2:])
        for unfold in exits:  # transpose(out, 0, 1) -> (T, B, H, d); its reshapes keep T, B
            with graph.inserting_before(unfold):
                back = graph.call_function(torch.permute, (unfold.args[0], [2, 0, 1, 3]))
                tokens = graph.call_method("size", (back, 0))
                batch = graph.call_method("size", (back, 1))
            for merge in list(unfold.users):
                merge.args = (back, [tokens, batch, -1])
            graph.erase_node(unfold)
    graph.eliminate_dead_code()
    return done


def _region(start: Node, folds: dict) -> tuple[set | None, list]:
    """The nodes computed from folded tensors up to the transposes that end them, or None if
    any of them is not part of a plain bmm attention."""
    region: set[Node] = set()
    exits: list[Node] = []
    stack = [start]
    while stack:
        node = stack.pop()
        if node in region:
            continue
        region.add(node)
        for user in node.users:
            if user in region or user in exits:
                continue
            if user.target is torch.transpose and tuple(user.args[1:]) in ((0, 1), (1, 0)):
                if not all(_is(m, torch.reshape) and len(m.args[1]) == 2 for m in user.users):
                    return None, []
                exits.append(user)
                continue
            step = _follows(user)
            if step is None:
                return None, []
            if step:
                stack.append(user)
            if user.target is torch.bmm:  # its other operand: a fold, maybe transposed/scaled
                for arg in user.args[:2]:
                    chain = _fold_chain(arg, folds)
                    if chain is None:
                        return None, []
                    stack.extend(n for n in chain if n not in region)
    if not any(n.target is torch.bmm for n in region):
        return None, []
    return region, exits


def _fold_chain(node, folds: dict) -> list[Node] | None:
    """[fold, ..., node] when `node` is a fold transposed or scaled on its way into a bmm."""
    chain = []
    while isinstance(node, Node) and node not in folds:
        if node.target is torch.bmm or node.target in _SOFTMAX:
            return chain  # an operand computed inside the region
        if _follows(node) is not True:
            return None
        chain.append(node)
        node = node.args[0]
    return [*chain, node] if isinstance(node, Node) else None


def _follows(user: Node) -> bool | None:
    """True: computes per (B*H) row the same on (B, H, ...) as on (B*H, ...) and stays in the
    region; False: a reshape, which leaves it with the same values; None: anything else."""
    target = user.target
    if target is torch.bmm:
        return True
    if target in _SCALARS:
        return True if not isinstance(user.args[1], Node) else None
    if target is torch.transpose:
        return True if all(isinstance(d, int) and d < 0 for d in user.args[1:3]) else None
    if target in _SOFTMAX:
        return True if isinstance(user.args[1], int) and user.args[1] != 0 else None
    if target is aten.to.dtype:
        return True
    if target is torch.reshape or target is aten._assert_tensor_metadata.default:
        return False
    return None
