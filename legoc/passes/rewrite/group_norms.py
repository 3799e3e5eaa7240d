"""How fold-ablations and slice-units treat a group norm over units (`legoc.ir.handlers.
group_norm` decides which of two forms a norm takes).

Read by Linear/Conv layers only, each channel is a unit. `hold_group_norm` makes the removed
channels read their constants; `plan_group` then cuts them out: per group g, a removed channel
j adds c_j(p) to the group's sums at each position p, so mean_g and var_g fold the constants'
sums (`sums`). Its output (c_j(p) - mean_g) rstd_g w_j + b_j reaches a reader with weight W as
rstd_g * A_g(p) - mean_g rstd_g B_g + C with constant A, B, C: the reader gets one column per
factor of each group's constants over positions (an SVD; rank 1 for per-channel constants),
one per group for -mean_g rstd_g and one for ones. Where those outnumber the removed channels,
the carriers are the removed channels' outputs and the readers keep their columns.

Read by anything else, whole groups go (their channels are coupled): `regroup` gives the
sliced norm the number of groups left, each as wide as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F

from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR
from legoc.ir.group_norm import carried_group_norm, held_group_norm
from legoc.ir.handlers.group_norm import group_norm_args
from legoc.ir.ops import broadcast_constant
from legoc.passes.rewrite.graph_edit import (
    add_tensor,
    first_placeholder,
    nodes_by_name,
    set_tensor,
)

RANK_TOLERANCE = 1e-9  # singular values below this share of the largest are rounding noise
UNIFORM_TOLERANCE = 1e-7


def held_keep(gm: torch.fx.GraphModule, node: torch.fx.Node) -> np.ndarray:
    """The channels a held group norm keeps."""
    return get_attr_tensor(gm, node.args[5].target).cpu().numpy()


def hold_group_norm(gm, node, gone: np.ndarray, x: torch.Tensor) -> None:
    """Rewrite a group norm over units into `held_group_norm`: its removed channels read their
    constant (captured in the masked model on one row, `x`), whatever the graph computes there;
    one value per channel where the constant is the same at every position."""
    groups, weight, bias, eps = group_norm_args(node)
    keep = torch.from_numpy(~gone)
    shape = [-1] + [1] * (x.dim() - 2)
    const = (x[0] * torch.from_numpy(gone).to(x.dtype).reshape(shape)).detach()
    spatial = list(range(1, const.dim()))
    if spatial:
        flat = const.mean(spatial, keepdim=True)
        if (const - flat).abs().max() <= UNIFORM_TOLERANCE * (1 + float(flat.abs().max())):
            const = flat
    base = node.name
    with gm.graph.inserting_before(node):
        keep_node = gm.graph.get_attr(add_tensor(gm, f"legoc_{base}_keep", keep))
        const_node = gm.graph.get_attr(add_tensor(gm, f"legoc_{base}_const", const))
        held = gm.graph.call_function(
            held_group_norm, (node.args[0], groups, weight, bias, eps, keep_node, const_node)
        )
    held.meta = dict(node.meta)
    node.replace_all_uses_with(held)
    gm.graph.erase_node(node)


@dataclass(frozen=True)
class CarriedGroupNorm:
    """The sliced form of one held group norm: its arguments, and each reader's new weight."""

    node: str
    all_removed: bool
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    tensors: dict[str, torch.Tensor]  # member, size, removed, sums, basis, basis/mean groups
    eps: float
    readers: dict[str, torch.Tensor]  # reader node -> weight: kept columns, then carriers
    direct: torch.Tensor | None


def _one_hot(groups_of: np.ndarray, groups: int) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(groups_of).long(), groups).double()


def plan_group(ir: IR, node: torch.fx.Node, ids: np.ndarray, gone: np.ndarray):
    """The carried form of held group norm `node` with `gone` channels removed."""
    gm = ir.gm
    groups, weight, bias, eps = group_norm_args(node)
    weight = get_attr_tensor(gm, weight.target).detach() if weight is not None else None
    bias = get_attr_tensor(gm, bias.target).detach() if bias is not None else None
    const = get_attr_tensor(gm, node.args[6].target).detach()
    channels = len(ids)
    group_of = np.arange(channels) // (channels // groups)
    gone_i, kept_i = np.flatnonzero(gone), np.flatnonzero(~gone)
    gone_t, kept_t = torch.from_numpy(gone_i), torch.from_numpy(kept_i)
    c = const.double().index_select(0, gone_t)  # removed, positions...
    w_gone = weight.double()[gone_t] if weight is not None else torch.ones(len(gone_i)).double()
    b_gone = bias.double()[gone_t] if bias is not None else torch.zeros(len(gone_i)).double()
    removed_per = np.bincount(group_of[gone_i], minlength=groups)
    with_removed = np.flatnonzero(removed_per)
    sums = torch.zeros(groups, 2, *c.shape[1:], dtype=torch.float64)
    bases, factors, basis_groups = [], {}, []
    for g in with_removed:
        rows = torch.from_numpy(np.flatnonzero(group_of[gone_i] == g))
        cg = c.index_select(0, rows)
        sums[g, 0], sums[g, 1] = cg.sum(0), (cg * cg).sum(0)
        u, s, vh = torch.linalg.svd(cg.reshape(len(rows), -1).T, full_matrices=False)
        rank = int((s > RANK_TOLERANCE * s[0]).sum()) if len(s) and s[0] > 0 else 0
        bases.append((u[:, :rank] * s[:rank]).T.reshape(rank, *c.shape[1:]))
        factors[int(g)] = (rows, vh[:rank])
        basis_groups += [int(g)] * rank
    basis = torch.cat(bases) if bases else torch.zeros(0, *c.shape[1:], dtype=torch.float64)
    basis_group = _one_hot(np.array(basis_groups, dtype=np.int64), groups)
    direct = None
    if len(basis_groups) + len(with_removed) + 1 >= len(gone_i):  # factors cost more
        direct = torch.stack([w_gone, b_gone]).to(const.dtype)
        basis, basis_group = c, _one_hot(group_of[gone_i], groups)
    readers = {}
    nodes = nodes_by_name(gm)
    for reader, norm in ir.analysis.norm_readers.items():
        if norm != node.name:
            continue
        w = get_attr_tensor(gm, nodes[reader].args[1].target).detach()
        cols = w.double().index_select(1, gone_t)  # out, removed, kernel...
        kept_cols = w.index_select(1, kept_t)
        if direct is not None:
            readers[reader] = torch.cat([kept_cols, cols.to(w.dtype)], dim=1)
            continue
        shape = [1, -1] + [1] * (cols.dim() - 2)
        scaled = cols * w_gone.reshape(shape)
        carriers = [
            torch.einsum("kr,or...->ok...", vh, scaled.index_select(1, rows))
            for rows, vh in factors.values()
        ]
        for rows, _ in factors.values():
            carriers.append(scaled.index_select(1, rows).sum(1, keepdim=True))
        carriers.append((cols * b_gone.reshape(shape)).sum(1, keepdim=True))
        readers[reader] = torch.cat([kept_cols, torch.cat(carriers, dim=1).to(w.dtype)], dim=1)
    dtype = const.dtype
    tensors = {
        "member": _one_hot(group_of[kept_i], groups),
        "size": torch.full((groups,), float(channels // groups), dtype=torch.float64),
        "removed": torch.from_numpy(removed_per).double(),
        "sums": sums,
        "basis": basis,
        "basis_group": basis_group,
        "mean_group": _one_hot(with_removed, groups),
    }
    return CarriedGroupNorm(
        node=node.name,
        all_removed=bool(len(kept_i) == 0 and (ids >= 0).all()),
        weight=weight.index_select(0, kept_t) if weight is not None else None,
        bias=bias.index_select(0, kept_t) if bias is not None else None,
        tensors={k: v.to(dtype) for k, v in tensors.items()},
        eps=eps,
        readers=readers,
        direct=direct,
    )


def apply_group(gm: torch.fx.GraphModule, carried: CarriedGroupNorm) -> None:
    """Replace the held group norm by its carried form (readers' weights: the caller's)."""
    node = nodes_by_name(gm)[carried.node]
    base = f"legoc_{carried.node}"
    x = node.args[0]
    with gm.graph.inserting_before(node):
        if carried.all_removed:  # read none of its producers, so dce can drop them
            x = _stand_in(gm, x)
        params = []
        for arg, value in ((node.args[2], carried.weight), (node.args[3], carried.bias)):
            if value is not None:
                set_tensor(gm, arg, value)
            params.append(arg if value is not None else None)
        tensors = [
            gm.graph.get_attr(add_tensor(gm, f"{base}_{name}", value))
            for name, value in carried.tensors.items()
        ]
        direct = None
        if carried.direct is not None:
            direct = gm.graph.get_attr(add_tensor(gm, f"{base}_direct", carried.direct))
        args = (x, *params, *tensors, carried.eps, direct)
        new = gm.graph.call_function(carried_group_norm, args)
    new.meta = {k: v for k, v in node.meta.items() if k != "tensor_meta"}
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _stand_in(gm: torch.fx.GraphModule, x: torch.fx.Node) -> torch.fx.Node:
    """A (batch, 1, positions...) stand-in for `x` that gives the carried norm its shapes: from
    the model input's batch where the positions are fixed sizes (so `x`'s producers go), else
    one channel of `x` (they stay)."""
    shape = x.meta.get("legoc.shape", ())
    if len(shape) < 3 or shape[0] != "N" or not all(isinstance(s, int) for s in shape[2:]):
        return gm.graph.call_method("narrow", (x, 1, 0, 1))
    zeros = add_tensor(gm, f"legoc_{x.name}_shape", torch.zeros(1, 1, *shape[2:]))
    reference = first_placeholder(gm)
    return gm.graph.call_function(broadcast_constant, (reference, gm.graph.get_attr(zeros), 0))


def regroup(gm: torch.fx.GraphModule, ir: IR, removed: np.ndarray) -> int:
    """Give each group norm whose groups were removed whole the number of groups left."""
    changed = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not F.group_norm:
            continue
        layout = ir.analysis.layouts.get(node.args[0].name)
        if layout is None:
            continue
        gone = (layout.ids >= 0) & removed[np.maximum(layout.ids, 0)]
        groups = group_norm_args(node)[0]
        kept = groups * int((~gone).sum()) // len(gone)
        if 0 < kept < groups:
            node.args = (node.args[0], kept, *node.args[2:])
            changed += 1
    return changed
