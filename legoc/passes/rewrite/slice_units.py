"""`slice-units`: physically remove the removed units' weights (coupled groups together).

Producer rows, per-unit parameters (e.g. BatchNorm) and reader columns are sliced; a reader that
loses all its inputs becomes the constant it computes; literal shapes and output indices on unit
paths are rewritten to the new sizes. Precondition: `fold-ablations` ran, so the removed units'
contributions already live in the readers' biases.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.analysis import get_attr_tensor, shape_of
from legoc.ir.core import IR
from legoc.ir.graph import arg
from legoc.ir.handlers.slicing import full_index
from legoc.ir.handlers.split import part_sizes
from legoc.ir.tokens import token_axis
from legoc.ir.vocabulary import producer_weight
from legoc.passes.base import PassContext, PassResult
from legoc.passes.rewrite.carry_norms import apply_carried, plan_carried
from legoc.passes.rewrite.fold_ablations import removed_ids
from legoc.passes.rewrite.gather_kv import gather_kept_heads
from legoc.passes.rewrite.graph_edit import (
    add_tensor,
    applied_weights,
    clone_ir,
    first_placeholder,
    nodes_by_name,
    set_shared_tensor,
    set_tensor,
    token_placeholder,
)
from legoc.passes.rewrite.group_norms import regroup

aten = torch.ops.aten


@dataclass(frozen=True)
class SliceUnits:
    name = "slice-units"
    kind = "rewrite"

    def run(self, ir: IR, ctx: PassContext | None = None) -> PassResult:
        removed = removed_ids(ir)
        out = clone_ir(ir)
        gm, analysis = out.gm, ir.analysis
        nodes = nodes_by_name(gm)
        before = out.param_count()
        stats = {
            "units_sliced": int(removed.sum()),
            "readers_made_constant": 0,
            "shapes_rewritten": 0,
        }
        if not removed.any():
            stats["params_removed"] = 0
            return PassResult(out, stats, changed=False)

        def keep_positions(ids: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.flatnonzero((ids < 0) | ~removed[np.maximum(ids, 0)]))

        # A space removed whole keeps its rows: once its readers are constants and
        # concatenations drop it, nothing reads it and `dce` deletes it.
        rows: dict[str, torch.Tensor] = {}
        row_dim = {s.node: 1 for s in analysis.spaces.values() if s.kind == "embedding"}
        for name, space in analysis.spaces.items():
            if space.kind == "norm":  # a restating norm: sliced as a carried norm (below)
                continue
            if not ir.kept[name].all() and ir.kept[name].any():
                rows[space.node] = torch.from_numpy(np.flatnonzero(ir.kept[name]))
                if space.groups > 1:  # whole groups go (coupled): the conv keeps the rest
                    kept_groups = space.groups * len(rows[space.node]) // space.size
                    _set_groups(nodes[space.node], kept_groups)
        norms = plan_carried(ir, removed)
        carried = {r: w for norm in norms for r, w in norm.readers.items()}
        columns = {
            use.node: keep_positions(use.ids)
            for use in analysis.consumers
            if use.node not in carried  # kept columns and the norm's carriers
        }
        constant_readers = [n for n, pos in columns.items() if len(pos) == 0]
        shared = applied_weights(gm)  # cut once for all uses: the analysis coupled them
        cut: set[str] = set()
        for name, node in nodes.items():
            if name not in rows and name not in columns and name not in carried:
                continue
            weight_node = producer_weight(node)
            if weight_node.target in cut:
                continue
            weight = carried.get(name, get_attr_tensor(gm, weight_node.target).detach())
            once = weight_node.target in shared
            if once:
                cut.add(weight_node.target)
            if name in rows:
                weight = weight.index_select(row_dim.get(name, 0), rows[name])
                bias_node = arg(node, 2, "bias")
                if isinstance(bias_node, torch.fx.Node):
                    bias = get_attr_tensor(gm, bias_node.target).detach()
                    _store(gm, bias_node, bias.index_select(0, rows[name]), once)
            if name in columns and 0 < len(columns[name]) < weight.shape[1]:
                weight = weight.index_select(1, columns[name])
            _store(gm, weight_node, weight, once)
        users = {}
        for param in analysis.channel_params:
            users.setdefault(param.target, set()).add(param.user)
        for param in analysis.channel_params:
            positions = keep_positions(param.ids)
            if len(positions) in (0, len(param.ids)) or param.target in cut:
                continue
            if len(users[param.target]) > 1:  # one per-unit parameter of several uses
                cut.add(param.target)
                tensor = get_attr_tensor(gm, param.target).detach()
                set_shared_tensor(gm, param.target, tensor.index_select(param.dim, positions))
                continue
            user = nodes[param.user]
            for attr_node in user.all_input_nodes:
                if attr_node.op == "get_attr" and attr_node.target == param.target:
                    tensor = get_attr_tensor(gm, attr_node.target).detach()
                    set_tensor(gm, attr_node, tensor.index_select(param.dim, positions))
        for norm in norms:
            apply_carried(gm, norm)
        if norms:  # reported only where the model has a norm over units
            stats["norms_carried"] = len(norms)
        regrouped = regroup(gm, ir, removed)
        if regrouped:  # group norms that lost whole groups
            stats["group_norms_regrouped"] = regrouped
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target is ops.select_outputs:
                layout = analysis.layouts.get(node.args[0].name)
                if layout is None:  # read through an op that froze it: nothing was sliced
                    continue
                kept = keep_positions(layout.ids).tolist()
                indices = tuple(kept.index(i) for i in node.args[1])
                if indices == tuple(range(len(kept))):  # the sliced layer is the task's outputs
                    node.replace_all_uses_with(node.args[0])
                    gm.graph.erase_node(node)
                    stats["shapes_rewritten"] += 1
                    continue
                node.args = (node.args[0], indices)
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target is torch.cat:
                stats["shapes_rewritten"] += self._drop_removed_operands(node, analysis, removed)
        for name in constant_readers:
            self._make_constant(gm, nodes[name])
            stats["readers_made_constant"] += 1
        _unit_sizes_as_literals(gm, analysis)
        for name in analysis.reshapes:
            stats["shapes_rewritten"] += self._rewrite_reshape(gm, nodes[name], removed)
        for name in analysis.splits:
            stats["shapes_rewritten"] += self._rewrite_split(nodes[name], analysis, removed)
        for perm in analysis.permutations:
            stats["shapes_rewritten"] += self._gather_permutation(gm, nodes, perm, removed)
        for share in analysis.shared_kv:  # GQA: uneven groups of query heads per KV head
            stats["shapes_rewritten"] += gather_kept_heads(gm, nodes, share, removed)
        gm.graph.lint()
        gm.recompile()
        out.kept = {}
        out.ablation = {}
        out.refresh()
        stats["params_removed"] = before - out.param_count()
        return PassResult(out, stats, changed=True)

    def _make_constant(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> None:
        """Every input removed: the reader outputs its (folded) bias, whatever the input."""
        x = node.args[0]
        symbolic = x.meta.get("legoc.shape", ())
        axis = symbolic.index("N") if "N" in symbolic else 0  # the batch axis
        shape = list(shape_of(x))
        shape[axis] = 1
        zeros = torch.zeros(shape)
        weight = get_attr_tensor(gm, node.args[1].target)
        bias_node = arg(node, 2, "bias")  # fold-ablations gives a bias-less Linear a kwarg
        bias = (
            get_attr_tensor(gm, bias_node.target) if isinstance(bias_node, torch.fx.Node) else None
        )
        with torch.no_grad():
            value = node.target(zeros, weight, bias, *node.args[3:])
        output = node
        folded = _folded_ones_term(node)
        if folded is not None:  # the constant includes what fold-ablations added after it
            add, term = folded
            with torch.no_grad():
                kernel = get_attr_tensor(gm, term.args[1].target)
                value = value + ops.constant_channel_conv(zeros, kernel, *term.args[2:])
            output = add
        reference, positions = first_placeholder(gm), token_axis(output)
        tokens = token_placeholder(gm)
        if tokens is not None and positions is not None and _uniform(value, positions):
            # the same at every position: one entry, repeated to the actual token count
            reference, value = tokens, value.narrow(positions, 0, 1)
        else:
            positions = None
        target = add_tensor(gm, f"{node.args[1].target.rsplit('.', 1)[0]}.legoc_constant", value)
        per_item = _rows_per_item(x, axis, reference)
        with gm.graph.inserting_before(node):
            const = gm.graph.get_attr(target)
            extra = () if positions is None else (positions,)
            extra = extra if per_item == 1 else (positions, per_item)
            replacement = gm.graph.call_function(
                ops.broadcast_constant, (reference, const, axis, *extra)
            )
        output.replace_all_uses_with(replacement)
        if output is not node:
            gm.graph.erase_node(output)
            gm.graph.erase_node(folded[1])
        gm.graph.erase_node(node)

    def _rewrite_reshape(
        self, gm: torch.fx.GraphModule, node: torch.fx.Node, removed: np.ndarray
    ) -> int:
        """Replace a literal size on the unit axis by -1 (a computed batch size elsewhere),
        writing the sizes back in the form the call had: `x.view(a, b, c)` (varargs) or
        `torch.reshape(x, [a, b, c])` / `x.view((a, b, c))` (one sequence)."""
        if node.op == "call_module" or node.target in (torch.flatten, "flatten"):
            return 0
        shape_args = list(node.args[1:])
        if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)):
            shape_args = list(shape_args[0])
        elif "shape" in node.kwargs or "size" in node.kwargs:
            shape_args = list(node.kwargs.get("shape", node.kwargs.get("size")))
        layout = node.meta.get("legoc.layout")
        if layout is None or layout.axis >= len(shape_args):
            return 0
        size = shape_args[layout.axis]  # a literal, or a size read off another tensor
        if not isinstance(size, (int, torch.fx.Node)) or size == -1:
            return 0
        out_shape = node.meta["legoc.shape"]
        in_shape = node.args[0].meta.get("legoc.shape", ())
        unit_size = -1
        for i, value in enumerate(shape_args):
            if value == -1 and i != layout.axis:
                # the batch, or a dim the reshape keeps from its input (a dynamic token axis
                # among them): read it at run time; anything else had one traced value
                if out_shape[i] != "N" and tuple(in_shape[: i + 1]) != tuple(out_shape[: i + 1]):
                    shape_args[i] = out_shape[i]
                    continue
                if _merges_batch(node, i):  # (B, windows) -> B * windows stays -1: the unit
                    unit_size = kept_slots(layout.ids, removed)  # axis gets its kept count
                    continue
                with gm.graph.inserting_before(node):
                    shape_args[i] = gm.graph.call_method("size", (node.args[0], i))
        shape_args[layout.axis] = unit_size
        set_shape_args(node, shape_args)
        return 1

    def _rewrite_split(self, node: torch.fx.Node, analysis, removed: np.ndarray) -> int:
        """A split (chunk) or slice along the unit axis takes the kept count of each part (q,
        k, v of a fused projection keep the same heads, but nothing here assumes it)."""
        ids = analysis.layouts[node.args[0].name].ids
        kept_at = (ids < 0) | ~removed[np.maximum(ids, 0)]
        if node.target in (aten.slice.Tensor, ops.slice_axis, operator.getitem):
            return _rewrite_slice(node, kept_at)
        sizes = part_sizes(node, len(ids))
        bounds = np.cumsum([0, *sizes])
        kept = [int(kept_at[a:b].sum()) for a, b in itertools.pairwise(bounds)]
        if kept == sizes or not any(kept):  # all gone: rows stay until dce drops the split
            return 0
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        # a chunk of kept parts is a split by their sizes (torch.split, whatever the node was)
        node.op, node.target = "call_function", torch.split
        node.args, node.kwargs = (node.args[0], kept, dim), {}
        return 1

    def _gather_permutation(self, gm, nodes, perm, removed: np.ndarray) -> int:
        """A channel shuffle of the kept channels is no shuffle of fewer channels: gather the
        kept ones in the shuffled order instead (the split/transpose/merge nodes are erased)."""
        gone = (perm.ids >= 0) & removed[np.maximum(perm.ids, 0)]
        if not gone.any() or gone.all():
            return 0
        rank = np.cumsum(~gone) - 1  # input slot -> its position among the kept slots
        order = [int(rank[i]) for i in perm.order if not gone[i]]
        first, last = nodes[perm.first], nodes[perm.last]
        target = add_tensor(gm, f"legoc_shuffle_{perm.first}", torch.tensor(order))
        with gm.graph.inserting_before(last):
            index = gm.graph.get_attr(target)
            gathered = gm.graph.call_function(torch.index_select, (first.args[0], perm.axis, index))
        last.replace_all_uses_with(gathered)
        node = last
        while node is not first:  # the shuffle's own nodes: they would reshape the wrong sizes
            before = node.args[0]
            gm.graph.erase_node(node)
            node = before
        gm.graph.erase_node(first)
        return 1

    def _drop_removed_operands(self, node: torch.fx.Node, analysis, removed: np.ndarray) -> int:
        """A concatenation along the unit axis forgets operands whose units were all removed."""
        layout = analysis.layouts.get(node.name)
        if layout is None:
            return 0
        keep = []
        for tensor in node.args[0]:
            ids = analysis.layouts[tensor.name].ids if tensor.name in analysis.layouts else None
            if ids is not None and (ids >= 0).all() and removed[ids].all():
                continue
            keep.append(tensor)
        if len(keep) == len(node.args[0]) or not keep:
            return 0
        if len(keep) == 1:
            node.replace_all_uses_with(keep[0])
            node.graph.erase_node(node)
            return 1
        node.args = (keep, *node.args[1:])
        return 1


def _store(gm: torch.fx.GraphModule, node: torch.fx.Node, value, shared: bool) -> None:
    """A weight (or bias) applied by several readers is cut once for all of them."""
    if shared:
        set_shared_tensor(gm, node.target, value)
    else:
        set_tensor(gm, node, value)


def _rows_per_item(x: torch.fx.Node, axis: int, reference: torch.fx.Node) -> int:
    """How many rows of `x`'s batch axis each input item has: 1, or the windows of a Swin
    block folded into it (traced (batch * windows, ...) where the input had batch rows)."""
    rows, items = (shape_of(x) or (1,))[axis], (shape_of(reference) or (1,))[0]
    return rows // items if items and rows % items == 0 and rows > items else 1


def _set_groups(node: torch.fx.Node, groups: int) -> None:
    if len(node.args) > 6:
        node.args = (*node.args[:6], groups, *node.args[7:])
    else:
        node.kwargs = {**node.kwargs, "groups": groups}


def _folded_ones_term(node: torch.fx.Node):
    """(add, term) when `node`'s only user adds a constant_channel_conv term to it."""
    users = list(node.users)
    if len(users) != 1 or users[0].target is not operator.add:
        return None
    add = users[0]
    term = add.args[1]
    if isinstance(term, torch.fx.Node) and term.target is ops.constant_channel_conv:
        return add, term
    return None


def set_shape_args(node: torch.fx.Node, sizes: list) -> None:
    """Give a view/reshape node new sizes in its own calling form: torch.reshape and aten take
    one sequence, `Tensor.view`/`reshape` take varargs or one sequence."""
    kwargs = {k: v for k, v in node.kwargs.items() if k not in ("shape", "size")}
    varargs = node.op == "call_method" and not (
        len(node.args) == 2 and isinstance(node.args[1], (tuple, list))
    )
    if varargs and not ({"shape", "size"} & set(node.kwargs)):
        node.args = (node.args[0], *sizes)
    else:
        node.args = (node.args[0], list(sizes))
    node.kwargs = kwargs


def _merges_batch(node: torch.fx.Node, i: int) -> bool:
    """Whether dim `i` of a reshape's output differs from its input's (the batch merged with
    the dims after it: Swin's attention scores `view(-1, heads, n, n)`)."""
    before, after = shape_of(node.args[0]), shape_of(node)
    if before is None:  # a carried norm made by this pass: compare the symbolic shapes
        before, after = node.args[0].meta.get("legoc.shape"), node.meta.get("legoc.shape")
    return before is None or after is None or i >= len(before) or before[i] != after[i]


def kept_slots(ids: np.ndarray, removed: np.ndarray) -> int:
    """Slots of a layout that stay after slicing: not a unit, or a kept one."""
    return int(((ids < 0) | ~removed[np.maximum(ids, 0)]).sum())


def _rewrite_slice(node: torch.fx.Node, kept_at: np.ndarray) -> int:
    """New bounds of a slice along the unit axis: the kept slots before and inside it."""
    if node.target is operator.getitem:
        index = full_index(node.args[1], len(shape_of(node.args[0])))
        axis = node.meta["legoc.layout"].axis
        bounds = index[axis]
    else:
        axis = None
        bounds = slice(*(node.args[2:4] + (None,) * (4 - len(node.args))))
    start, stop, _ = bounds.indices(len(kept_at))
    new = slice(int(kept_at[:start].sum()), int(kept_at[:stop].sum()))
    if (new.start, new.stop) == (start, stop):
        return 0
    if axis is None:
        node.args = (node.args[0], node.args[1], new.start, new.stop, *node.args[4:])
    else:
        index = list(index)
        index[axis] = new
        node.args = (node.args[0], tuple(index))
    return 1


def _uniform(value: torch.Tensor, axis: int) -> bool:
    return bool((value - value.narrow(axis, 0, 1)).abs().max() <= 1e-7 * (1 + value.abs().max()))


def _unit_sizes_as_literals(gm: torch.fx.GraphModule, analysis) -> None:
    """A size read off a unit axis (`b, h, w, c = x.shape`; `x.size(-1)`) keeps the value it
    had: a model may compute other shapes from it (Swin's head_dim = c // heads), which slicing
    must not change; reshapes on unit paths then get -1 there (`_rewrite_reshape`)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_method" and node.target == "size" and len(node.args) == 2:
            tensor, dim = node.args
        elif (
            node.op == "call_function"
            and node.target is operator.getitem
            and isinstance(node.args[0], torch.fx.Node)
            and node.args[0].op == "call_function"
            and node.args[0].target is getattr
            and node.args[0].args[1] == "shape"
            and isinstance(node.args[1], int)
        ):
            tensor, dim = node.args[0].args[0], node.args[1]
        else:
            continue
        layout = analysis.layouts.get(tensor.name) if isinstance(tensor, torch.fx.Node) else None
        shape = shape_of(tensor) if layout is not None else None
        if shape is None or dim % len(shape) != layout.axis:
            continue
        value = int(shape[layout.axis])
        for user in list(node.users):
            user.args = torch.fx.node.map_arg(
                user.args, lambda a, n=node, v=value: v if a is n else a
            )
            user.kwargs = torch.fx.node.map_arg(
                user.kwargs, lambda a, n=node, v=value: v if a is n else a
            )
        gm.graph.erase_node(node)
