"""Unfold heads that a model folds into the batch axis with a reshape (DeBERTa's attention).

DeBERTa-v2 views q, k and v as `(B, H, T, d)` and reshapes them to `(B*H, T, d)`; its scores,
the relative position bias (q and k against per-head positional projections, `repeat`ed over
the batch, then `gather`ed by relative position) and `p @ v` are all computed in that folded
form, with reshapes to `(B, H, T, T)` and back around the mask and softmax. Here each such
region is rewritten, value for value, on the `(B, H, ...)` tensors the folds came from: `bmm`
becomes a 4-d matmul, a `repeat` over the batch an `expand`, a gather's index gets the heads
axis, and the reshapes back to `(B, H, ...)` read the unfolded tensor. Row-major order of
`(B, H, ...)` equals that of `(B*H, ...)`, so every op computes what it did, and the attention
handlers see heads on an axis of their own. A region whose folded tensors meet any other op
is left as it was (its heads then freeze, `legoc inspect` says why).
"""

from __future__ import annotations

import operator

import torch
import torch.fx

aten = torch.ops.aten
Node = torch.fx.Node

_RESHAPES = {torch.reshape, aten.view.default, aten.reshape.default}
_ELEMENTWISE = {operator.mul, operator.truediv, operator.add, operator.sub, aten.add_.Tensor}
_SOFTMAX = {aten.softmax.int, aten._softmax.default}
_EXPANDS = {aten.expand.default, "expand"}
_SAME = {aten.to.dtype}
_ASSERT = aten._assert_tensor_metadata.default


def _shape(node) -> tuple | None:
    value = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _same(a, b) -> bool:
    """Sizes equal: ints by value, symbolic sizes by their expression."""
    return len(a) == len(b) and all(x is y or str(x) == str(y) for x, y in zip(a, b, strict=True))


def _heads_of_fold(node: Node) -> int | None:
    """H of `reshape(x, ...)` taking x of shape (n, H, a, b) to (n*H, a, b), else None."""
    if not (isinstance(node, Node) and node.target in _RESHAPES):
        return None
    source, out = _shape(node.args[0]), _shape(node)
    if source is None or out is None or len(source) != 4 or len(out) != 3:
        return None
    heads = source[1]
    return heads if isinstance(heads, int) and _same(source[2:], out[1:]) else None


def _unfolds(node: Node, heads: int) -> bool:
    """`reshape(x, ...)` taking folded x of shape (n*H, a, b) to (n, H, a, b)."""
    source, out = _shape(node.args[0]), _shape(node)
    return (
        node.target in _RESHAPES
        and source is not None
        and out is not None
        and len(source) == 3
        and len(out) == 4
        and out[1] == heads
        and _same(out[2:], source[1:])
    )


def unfold_batch_heads(gm: torch.fx.GraphModule) -> int:
    """Rewrite every region of heads folded into the batch axis by a reshape; returns how many
    regions were unfolded."""
    graph = gm.graph
    folds = {n: h for n in graph.nodes if (h := _heads_of_fold(n)) is not None}
    derived = _derived(folds)
    seen: set[Node] = set()
    done = 0
    for start in folds:
        if start in seen:
            continue
        region = _component(start, derived)
        seen |= region
        heads = {folds[n] for n in region if n in folds}
        if len(heads) != 1 or not _valid(region, derived, folds, next(iter(heads))):
            continue
        _rewrite(graph, region, folds, next(iter(heads)))
        done += 1
    if done:
        graph.eliminate_dead_code()
    return done


def _derived(folds: dict) -> set[Node]:
    """Folds and every node computed from them by an op that may stay folded."""
    derived, stack = set(), list(folds)
    while stack:
        node = stack.pop()
        if node in derived:
            continue
        derived.add(node)
        stack.extend(u for u in node.users if _kind(u) is not None and u not in folds)
    return derived


def _kind(node: Node) -> str | None:
    target = node.target
    if target is torch.bmm:
        return "bmm"
    if target is torch.transpose:
        return "transpose"
    if target in _ELEMENTWISE:
        return "elementwise"
    if target in _SOFTMAX:
        return "softmax"
    if target in _SAME:
        return "same"
    if target is aten.repeat.default:
        return "repeat"
    if target is aten.gather.default:
        return "gather"
    return None


def _component(start: Node, derived: set[Node]) -> set[Node]:
    """The derived nodes connected to `start` through derived operands and users."""
    region, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node in region:
            continue
        region.add(node)
        stack.extend(u for u in node.users if u in derived)
        stack.extend(a for a in node.all_input_nodes if a in derived)
    return region


def _valid(region: set[Node], derived: set[Node], folds: dict, heads: int) -> bool:
    """Every folded tensor is read only by ops rewritten here, reshapes back to (n, H, ...)
    or metadata asserts, and every op computes on (n, H, ...) what it did on (n*H, ...)."""
    for node in region:
        for user in node.users:
            if user not in region and user.target is not _ASSERT and not _unfolds(user, heads):
                return False
        if node not in folds and not _op_follows(node, region, heads):
            return False
    return True


def _op_follows(node: Node, region: set[Node], heads: int) -> bool:
    kind, args = _kind(node), node.args
    if kind == "bmm":
        return all(a in region for a in args[:2])
    if kind == "transpose":
        return all(_inside_rows(d) for d in args[1:3])
    if kind == "softmax":
        return _inside_rows(args[1])
    if kind == "same":
        return True
    if kind == "elementwise":
        if node.target is aten.add_.Tensor and len(args[0].users) != 1:
            return False  # the updated tensor is read again: not an out-of-place add
        inside = [a for a in args[:2] if a in region]
        if len(inside) == 2:
            return _same(_shape(args[0]) or (), _shape(args[1]) or (None,))
        other = next(a for a in args[:2] if a not in region)
        return not isinstance(other, Node) or _broadcasts(_shape(other))
    if kind == "repeat":  # the per-head positional rows, repeated over the batch
        source, times = _shape(args[0]), args[1]
        return (
            source is not None
            and source[0] == heads
            and len(times) == 3
            and list(times[1:]) == [1, 1]
        )
    if kind == "gather":
        index = args[2]
        return _inside_rows(args[1]) and _broadcast_index(index) is not None
    return False


def _inside_rows(dim) -> bool:
    """A dim of a folded (n*H, a, b) tensor other than the folded one (0, or -3)."""
    return isinstance(dim, int) and dim % 3 != 0


def _broadcasts(shape: tuple | None) -> bool:
    """An operand that broadcasts alike over (n*H, a, b) and (n, H, a, b): no folded axis."""
    return shape is not None and (len(shape) <= 2 or (len(shape) == 3 and shape[0] == 1))


def _broadcast_index(index) -> Node | None:
    """x of an index `x.expand(n*H, a, b)` with x of shape (1, a, b): one index for all heads."""
    if not (isinstance(index, Node) and index.target in _EXPANDS):
        return None
    source, out = _shape(index.args[0]), _shape(index)
    if source is None or out is None or len(source) != 3 or source[0] != 1:
        return None
    return index.args[0] if _same(source[1:], out[1:]) else None


def _shift(dim: int) -> int:
    return dim + 1 if dim >= 0 else dim


def _rewrite(graph: torch.fx.Graph, region: set[Node], folds: dict, heads: int) -> None:
    new: dict[Node, Node] = {}
    for node in [n for n in graph.nodes if n in region]:  # graph order: operands first
        if node in folds:
            new[node] = node.args[0]
            continue
        args = [new.get(a, a) if isinstance(a, Node) else a for a in node.args]
        kind = _kind(node)
        with graph.inserting_before(node):
            if kind == "bmm":
                out = graph.call_function(torch.matmul, tuple(args[:2]))
            elif kind == "transpose":
                out = graph.call_function(torch.transpose, (args[0], *map(_shift, args[1:3])))
            elif kind == "softmax":
                out = graph.call_function(node.target, (args[0], _shift(args[1]), *args[2:]))
            elif kind == "repeat":  # (1, H, a, b) over the batch: the same rows, expanded
                out = graph.call_method("expand", (args[0], [args[1][0], -1, -1, -1]))
            elif kind == "gather":
                out = _gather(graph, node, args)
            elif node.target is aten.add_.Tensor:
                out = graph.call_function(operator.add, tuple(args[:2]))
            else:
                out = graph.call_function(node.target, tuple(args), dict(node.kwargs))
        new[node] = out
    for node in list(new):
        for user in list(node.users):
            if user in region:
                continue
            if user.target is _ASSERT:
                graph.erase_node(user)
            else:  # a reshape back to (n, H, a, b): the unfolded tensor itself
                user.replace_all_uses_with(new[node])
                graph.erase_node(user)
    for node in reversed([n for n in graph.nodes if n in region and n not in folds]):
        if not node.users:
            graph.erase_node(node)


def _gather(graph: torch.fx.Graph, node: Node, args: list) -> Node:
    """gather along a key axis with one index for all heads: the index gets the heads axis,
    sized from the scores it reads (so it follows when heads are sliced)."""
    scores, dim = args[0], args[1]
    source = _broadcast_index(node.args[2])
    batch = graph.call_method("size", (scores, 0))
    heads = graph.call_method("size", (scores, 1))
    index = graph.call_function(aten.unsqueeze.default, (source, 1))
    index = graph.call_method("expand", (index, [batch, heads, -1, -1]))
    return graph.call_function(aten.gather.default, (scores, _shift(dim), index))
