"""Attention written out: `softmax(q @ kᵀ * scale + mask + bias) @ v` with matmul, bmm,
baddbmm or einsum (GPT-2's eager path, nn.MultiheadAttention with need_weights, research code).

A head's q, k and v channels are one unit, as for scaled_dot_product_attention. The scores
`q @ kᵀ` carry no units of their own: they are followed (in `walk.scores`, with the head axis)
through per-head ops — a scale, an additive mask or bias, a masked_fill, dtype casts, dropout —
to a softmax over the key axis and on to the `p @ v` that contracts that axis. A removed head's
v is one constant per channel at every key, so whatever its (input-dependent) probabilities,
rows that sum to one give back that constant, which folds into the output projection's bias:
exact. What breaks that argument freezes the heads, with the reason: scores that leave the
region (returned, mixed across heads, read by another op), values that are not whole heads,
arithmetic after the softmax, a per-head bias computed from the input.

One-head attention (no head axis, the channels contracted in `q @ kᵀ`) is one unit: every q,
k and v channel of the layer together.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx import Node

from legoc.ir.graph import op_name, shape_of
from legoc.ir.handlers.head_bias import lookup_source, one_unit, slice_head_bias
from legoc.ir.units import ChannelParam, Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

aten = torch.ops.aten

SOFTMAX = {F.softmax, torch.softmax, aten.softmax.int, aten._softmax.default, "softmax"}
# ops that hand the scores on unchanged (values or not at all)
PASS_THROUGH = {
    F.dropout,
    aten.dropout.default,
    aten.clone.default,
    aten.to.dtype,
    aten.to.dtype_layout,
    aten.to.device,
    aten.type_as.default,
    "to",
    "type_as",
    "contiguous",
    "clone",
    "float",
}
# read metadata or the shape only: the scores' values go nowhere
IGNORED = {aten._assert_tensor_metadata.default, "size"}
GATHER = {aten.gather.default, torch.gather, "gather"}
EXPANDS = {aten.expand.default, "expand"}
ADDITIVE = {operator.add, operator.sub, torch.add, torch.sub, "add", "sub"}
SCALING = {operator.mul, operator.truediv, torch.mul, torch.div, "mul", "div"}
MASKING = {aten.masked_fill.Scalar, aten.masked_fill.Tensor, "masked_fill", torch.masked_fill}
WHERE = {torch.where, aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf}
PERMUTES = {torch.transpose, torch.permute, "transpose", "permute"}
RESHAPES = {torch.reshape, "view", "reshape"}
MATMULS = {
    torch.matmul,
    torch.bmm,
    torch.baddbmm,
    torch.einsum,
    operator.matmul,
    "matmul",
    "bmm",
    "baddbmm",
}


@dataclass(frozen=True)
class Scores:
    """Attention scores of heads `ids` along `axis` (None: one head, the whole tensor);
    `softmax`: the axis a softmax normalised last (None: not normalised)."""

    axis: int | None
    ids: np.ndarray
    softmax: int | None = None


def _target(node: Node):
    return node.target


# -- the letters of a matmul-like op -----------------------------------------------------------
def _einsum_letters(node: Node) -> tuple[str, str, str, list[Node]] | None:
    equation = node.args[0]
    operands = node.args[1] if len(node.args) == 2 else node.args[1:]
    if not isinstance(equation, str) or "->" not in equation or "." in equation:
        return None
    inputs, out = equation.replace(" ", "").split("->")
    parts = inputs.split(",")
    if len(parts) != 2 or len(operands) != 2:
        return None
    return parts[0], parts[1], out, list(operands)


def letters(node: Node) -> tuple[str, str, str, list] | None:
    """(letters of a, letters of b, letters of the output, [a, b]) of a matmul, bmm, baddbmm
    or two-operand einsum; None for any other form (broadcast batch dims, vectors)."""
    target = _target(node)
    if target in (torch.einsum, aten.einsum.default):
        return _einsum_letters(node)
    if target in (torch.baddbmm, aten.baddbmm.default, "baddbmm"):
        operands = list(node.args[1:3])
    else:
        operands = list(node.args[:2])
    shapes = [shape_of(o) if isinstance(o, Node) else None for o in operands]
    if (
        len(shapes) != 2
        or any(s is None for s in shapes)
        or len(shapes[0]) != len(shapes[1])
        or len(shapes[0]) < 2
    ):
        return None
    batch = "abcdefgh"[: len(shapes[0]) - 2]
    if shapes[0][:-2] != shapes[1][:-2]:
        return None  # broadcast batch dims: not followed
    return batch + "ik", batch + "kj", batch + "ij", operands


# -- the handlers --------------------------------------------------------------------------------
def matmul(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """q @ kᵀ (both operands heads) starts scores; p @ v (normalised scores, v heads) ends
    them with the heads of v; any other matmul of units is not followed."""
    spec = letters(node)
    operands = spec[3] if spec else []
    a, b = [*operands, None, None][:2]
    if spec is None or not all(isinstance(o, Node) for o in (a, b)):
        return _freeze_all(walk, node, "a matmul legoc does not follow")
    la_s, lb_s, out_s, _ = spec
    if b.name in walk.scores:
        return _freeze_all(walk, node, "attention scores on the right of a matmul")
    if a.name in walk.scores:
        return _values(walk, node, walk.scores[a.name], la_s, lb_s, out_s, b)
    la, lb = walk.layouts.get(a.name), walk.layouts.get(b.name)
    extra = [x for x in node.all_input_nodes if x not in (a, b)]
    if la is None or lb is None or any(x.name in walk.layouts for x in extra):
        return walk.cannot_slice(node)
    letter_a, letter_b = la_s[la.axis], lb_s[lb.axis]
    contracted = set(la_s) & set(lb_s) - set(out_s)
    if letter_a != letter_b or len(la.ids) != len(lb.ids):
        return _freeze_all(walk, node, "attention over units that are not whole heads")
    if letter_a in out_s:  # heads on an axis of their own (or folded into the batch)
        ids = walk.couple(la.ids, lb.ids, "attention head")
        scores = Scores(out_s.index(letter_a), ids)
    elif letter_a in contracted and len(contracted) == 1:  # one head: its channels contracted
        ids = one_unit(walk, np.concatenate([la.ids, lb.ids]))
        scores = Scores(None, ids[:1])
    else:
        return _freeze_all(walk, node, "attention over units that are not whole heads")
    walk.scores[node.name] = scores
    if _reaches_output(node):
        walk.freeze(scores.ids, "attention scores reach the model output")
    return None


def _values(walk, node, scores: Scores, la_s, lb_s, out_s, v: Node) -> Layout | None:
    lv = walk.layouts.get(v.name)
    key = set(la_s) & set(lb_s) - set(out_s)
    if (
        lv is None
        or scores.softmax is None
        or len(key) != 1
        or la_s[scores.softmax] not in key
        or (scores.axis is not None and la_s[scores.axis] in key)
    ):
        walk.freeze(scores.ids, "attention probabilities not applied to whole heads of values")
        return _freeze_all(walk, node, "attention over values that are not whole heads")
    letter = lb_s[lv.axis]
    if letter in key or letter not in out_s:
        walk.freeze(scores.ids, "attention values contracted along their unit axis")
        return _freeze_all(walk, node, "attention over values that are not whole heads")
    if scores.axis is None:  # one head: every value channel joins it
        ids = one_unit(walk, np.concatenate([scores.ids, lv.ids]))[1:]
        return Layout(out_s.index(letter), ids)
    if la_s[scores.axis] != letter or len(lv.ids) != len(scores.ids):
        walk.freeze(scores.ids, "attention heads of probabilities and values differ")
        return _freeze_all(walk, node, "attention over values that are not whole heads")
    return Layout(out_s.index(letter), walk.couple(scores.ids, lv.ids, "attention head"))


def softmax(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    """A softmax of units (not of scores) mixes them: not followed."""
    return walk.cannot_slice(node)


def score_op(walk: Propagation, node: Node, tracked: list[Node]) -> Layout | None:
    """An op reading attention scores: follow it per head, or freeze the heads it reads."""
    target = _target(node)
    reads = [a for a in node.all_input_nodes if a.name in walk.scores]
    first = walk.scores[reads[0].name]
    if target in IGNORED:
        return None
    if target in MATMULS:
        return matmul(walk, node, tracked)
    unit_inputs = [a for a in node.all_input_nodes if a.name in walk.layouts]
    if unit_inputs:
        for bias in unit_inputs:  # a per-head bias looked up from a table: its heads' lookup
            source = lookup_source(bias)
            if source is not None and source in walk.producer_of:
                walk.bias_embeddings.add(source)
        return _freeze_all(walk, node, f"attention scores combined with units by {op_name(node)}")
    ndim = len(shape_of(node) or ())
    if target in PASS_THROUGH and node.args[0] is reads[0]:
        walk.scores[node.name] = first
        return None
    if target in SOFTMAX and node.args[0] is reads[0]:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dim, int) and (first.axis is None or dim % ndim != first.axis):
            walk.scores[node.name] = Scores(first.axis, first.ids, dim % ndim)
            return None
        return _freeze(walk, node, reads, "softmax across attention heads")
    if target in PERMUTES and node.args[0] is reads[0]:
        return _permute(walk, node, first, ndim)
    if target in RESHAPES and node.args[0] is reads[0]:
        return _reshape(walk, node, reads, first)
    if first.softmax is not None and target not in PASS_THROUGH:
        return _freeze(walk, node, reads, f"attention probabilities changed by {op_name(node)}")
    if target in GATHER and node.args[0] is reads[0]:
        return _gather(walk, node, reads, first, ndim)
    if target in ADDITIVE or target in SCALING:
        return _combine(walk, node, reads, target in SCALING)
    if target in MASKING and node.args[0] is reads[0]:
        return _per_head_operands(walk, node, reads, first, node.args[1:2])
    if target in WHERE and len(node.args) == 3 and node.args[0] not in reads:
        return _per_head_operands(walk, node, reads, first, node.args[:1])
    return _freeze(walk, node, reads, f"attention scores read by {op_name(node)}")


def _combine(walk, node, reads, scaling: bool) -> None:
    """scores ± (mask, bias, other scores of the same heads), scores * or / a scale."""
    scores = [walk.scores[r.name] for r in reads]
    first = scores[0]
    if scaling and len(reads) > 1:
        return _freeze(walk, node, reads, "attention scores multiplied together")
    ids = first.ids
    for other in scores[1:]:
        if other.axis != first.axis or len(other.ids) != len(ids):
            return _freeze(walk, node, reads, "attention scores of different heads added")
        ids = walk.couple(ids, other.ids, "attention head")
    if shape_of(node) != shape_of(reads[0]):
        return _freeze(walk, node, reads, f"{op_name(node)} broadcasts attention scores")
    others = [a for a in node.args[:2] if isinstance(a, Node) and a not in reads]
    return _per_head_operands(walk, node, reads, Scores(first.axis, ids), others)


def _gather(walk, node, reads, scores: Scores, ndim: int) -> None:
    """Each head's scores looked up along another axis (DeBERTa's relative position bias): per
    head, when one index serves every head and is expanded over the heads axis to a size
    computed in the graph (which then follows the slicing)."""
    dim, index = node.args[1], node.args[2]
    if scores.axis is None or not isinstance(dim, int) or dim % ndim == scores.axis:
        return _freeze(walk, node, reads, "attention scores gathered across heads")
    if not _expanded_over(index, scores.axis, ndim):
        return _freeze(walk, node, reads, "a per-head gather index computed in the graph")
    walk.scores[node.name] = scores
    return None


def _expanded_over(index, axis: int, ndim: int) -> bool:
    """`x.expand(sizes)` with x of size 1 along `axis` and sizes[axis] computed (not a literal)."""
    if not isinstance(index, Node) or index.target not in EXPANDS:
        return False
    sizes = index.args[1] if len(index.args) == 2 else index.args[1:]
    source = shape_of(index.args[0]) or ()
    return (
        isinstance(sizes, (list, tuple))
        and len(sizes) == ndim == len(source)
        and source[axis] == 1
        and isinstance(sizes[axis], Node)
    )


def _per_head_operands(walk, node, reads, scores: Scores, operands) -> None:
    """A mask or bias broadcast over the heads is fine; one per head is sliced with them
    (a weight) or freezes them (computed: it would keep every head after slicing)."""
    ndim = len(shape_of(node))
    for other in operands:
        if not isinstance(other, Node):
            continue
        shape = shape_of(other) or ()
        if scores.axis is None:
            continue
        dim = scores.axis - (ndim - len(shape))
        if not (0 <= dim < len(shape)) or shape[dim] == 1:
            continue
        if other.op == "get_attr":
            walk.channel_params.append(ChannelParam(other.target, node.name, dim, scores.ids))
            continue
        if slice_head_bias(walk, other, dim, scores.ids):
            continue
        return _freeze(walk, node, reads, "a per-head attention bias computed in the graph")
    walk.scores[node.name] = scores
    return None


def _permute(walk, node, scores: Scores, ndim: int) -> None:
    rest = list(node.args[1:])
    if _target(node) in (torch.transpose, "transpose"):
        a, b = (d % ndim for d in rest[:2])
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
    else:
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        perm = [d % ndim for d in dims]
    axis = None if scores.axis is None else perm.index(scores.axis)
    norm = None if scores.softmax is None else perm.index(scores.softmax)
    walk.scores[node.name] = Scores(axis, scores.ids, norm)
    return None


def _reshape(walk, node, reads, scores: Scores) -> None:
    """Scores regrouped along the axes before their heads (Swin's `view(B, windows, heads, n,
    n)` to add the shift mask per window, and back): the heads and what follows them stay.
    `slice-units` gives the reshape the kept head count."""
    before, after = shape_of(reads[0]), shape_of(node)
    axis = scores.axis
    if axis is None or (scores.softmax is not None and scores.softmax < axis):
        return _freeze(walk, node, reads, "attention scores reshaped across their heads")
    tail = tuple(before[axis:])
    start = len(after) - len(tail)
    outer = int(np.prod(before[:axis], dtype=np.int64))
    if start < 0 or tuple(after[start:]) != tail or int(np.prod(after[:start])) != outer:
        return _freeze(walk, node, reads, "attention scores reshaped across their heads")
    softmax = None if scores.softmax is None else scores.softmax - axis + start
    walk.scores[node.name] = Scores(start, scores.ids, softmax)
    node.meta["legoc.layout"] = Layout(start, scores.ids)  # what slice-units rewrites
    walk.reshapes.append(node.name)
    return None


def _freeze(walk, node, reads, reason: str) -> None:
    for r in reads:
        walk.freeze(walk.scores[r.name].ids, reason)
    return _freeze_all(walk, node, reason)


def _freeze_all(walk, node, reason: str) -> None:
    for r in node.all_input_nodes:
        if r.name in walk.scores:
            walk.freeze(walk.scores[r.name].ids, reason)
    walk.freeze_inputs(node, reason)
    return None


def _reaches_output(node: Node) -> bool:
    """Whether scores flow into the model output other than through a p @ v (where they end)."""
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        for user in current.users:
            if user.op == "output":
                return True
            if user.name in seen or _is_values_matmul(user, current):
                continue
            seen.add(user.name)
            stack.append(user)
    return False


def _is_values_matmul(user: Node, scores: Node) -> bool:
    if user.op not in ("call_function", "call_method") or user.target not in MATMULS:
        return False
    spec = letters(user)
    return spec is not None and spec[3][0] is scores
