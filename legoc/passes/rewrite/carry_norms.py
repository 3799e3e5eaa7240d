"""How `slice-units` cuts a norm over units: the removed channels leave the norm and its
readers, and what they contributed comes back through carrier channels (`ops.carried_norm`).

A removed channel j reaches the norm as its constant c_j (per position p), so a reader with
weight W receives from it  W_j (w_j (c_j(p) - mean) rstd + b_j). Summed over the removed
channels that is  rstd * A(p) - mean * rstd * B + C  with constant A, B, C. A(p) is factored
over positions (an SVD of the constants: rank 1 for per-channel constants, 0 for zero
ablation), so the reader gets one column per factor, one for -mean * rstd and one for a channel
of ones: exact, and the norm's weight and bias are sliced like any per-unit parameter. Where
the factors would outnumber the removed channels (constants that vary over positions, as a
class token and position embedding make them), the carriers are the removed channels' outputs
themselves: the readers keep their columns, the norm's producers still lose their rows.

A norm that restates its units (its output is a unit space, `legoc.ir.handlers.norm`) has no
carriers: its removed outputs are constants its readers folded, so only the statistics' sums
are kept, and its scale and shift lose the removed channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.analysis import get_attr_tensor
from legoc.ir.core import IR
from legoc.ir.group_norm import held_group_norm
from legoc.passes.rewrite.graph_edit import add_tensor, nodes_by_name, set_tensor
from legoc.passes.rewrite.group_norms import CarriedGroupNorm, apply_group, plan_group

RANK_TOLERANCE = 1e-9  # singular values below this share of the largest are rounding noise


@dataclass(frozen=True)
class CarriedNorm:
    """The sliced form of one held norm: its arguments, and each reader's new weight."""

    node: str
    kept: torch.Tensor  # kept channel positions
    all_removed: bool
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    sums: torch.Tensor
    basis: torch.Tensor
    removed: int
    eps: float | None  # None: the dtype's epsilon, as torch's rms_norm
    rms: bool
    readers: dict[str, torch.Tensor]  # reader node -> weight: kept columns, then carriers
    direct: torch.Tensor | None  # the removed channels' scale and shift, when carried as such
    carries: bool = True  # False: the norm restates its units (no carriers, no readers)


def plan_carried(ir: IR, removed: np.ndarray) -> list[CarriedNorm | CarriedGroupNorm]:
    """The carried form of every held norm with removed channels (read from `ir`)."""
    nodes = nodes_by_name(ir.gm)
    analysis = ir.analysis
    plans = []
    restating = analysis.restated_norms
    for name in sorted(set(analysis.norm_readers.values()) | restating):
        node = nodes[name]
        if node.target not in (ops.held_norm, held_group_norm):
            continue
        ids = analysis.layouts[node.args[0].name].ids
        gone = (ids >= 0) & removed[np.maximum(ids, 0)]
        if not gone.any():
            continue
        if name in restating:
            plans.append(_plan_one(ir, node, ids, gone, carries=False))
            continue
        plan = plan_group if node.target is held_group_norm else _plan_one
        plans.append(plan(ir, node, ids, gone))
    return plans


def _tensor(gm, arg) -> torch.Tensor | None:
    return get_attr_tensor(gm, arg.target).detach() if isinstance(arg, torch.fx.Node) else None


def _plan_one(
    ir: IR, node: torch.fx.Node, ids: np.ndarray, gone: np.ndarray, carries: bool = True
) -> CarriedNorm:
    gm = ir.gm
    _x, weight, bias, _keep, const, eps, rms = node.args
    weight, bias, const = _tensor(gm, weight), _tensor(gm, bias), _tensor(gm, const)
    gone_t = torch.from_numpy(np.flatnonzero(gone))
    kept_t = torch.from_numpy(np.flatnonzero(~gone))
    c = const.double().index_select(-1, gone_t)  # positions..., removed
    sums = torch.cat([c.sum(-1, keepdim=True), (c * c).sum(-1, keepdim=True)], dim=-1)
    flat = c.reshape(-1, c.shape[-1])
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    rank = int((s > RANK_TOLERANCE * s[0]).sum()) if len(s) and s[0] > 0 else 0
    basis = (u[:, :rank] * s[:rank]).reshape(*c.shape[:-1], rank)
    factors = vh[:rank]  # rank x removed
    w_gone = weight.double()[gone_t] if weight is not None else torch.ones(len(gone_t)).double()
    b_gone = bias.double()[gone_t] if bias is not None else torch.zeros(len(gone_t)).double()
    direct = None
    if not carries:
        basis = basis[..., :0]
    elif rank + (0 if rms else 1) + 1 >= len(gone_t):  # factors would cost more than channels
        direct = torch.stack([w_gone, b_gone]).to(const.dtype)
        basis = c
    readers = {}
    for reader, norm in ir.analysis.norm_readers.items():
        if norm != node.name or not carries:
            continue
        reader_node = nodes_by_name(gm)[reader]
        w = get_attr_tensor(gm, reader_node.args[1].target).detach()
        cols = w.double().index_select(1, gone_t)  # out, removed, kernel...
        shape = [1, -1] + [1] * (cols.dim() - 2)
        if direct is not None:
            readers[reader] = torch.cat([w.index_select(1, kept_t), cols.to(w.dtype)], dim=1)
            continue
        scaled = cols * w_gone.reshape(shape)
        carriers = [torch.einsum("kr,or...->ok...", factors, scaled)] if rank else []
        if not rms:
            carriers.append(scaled.sum(1, keepdim=True))
        carriers.append((cols * b_gone.reshape(shape)).sum(1, keepdim=True))
        carried = torch.cat(carriers, dim=1).to(w.dtype)
        readers[reader] = torch.cat([w.index_select(1, kept_t), carried], dim=1)
    return CarriedNorm(
        node=node.name,
        kept=kept_t,
        all_removed=bool(len(kept_t) == 0 and (ids >= 0).all()),
        weight=weight.index_select(0, kept_t) if weight is not None else None,
        bias=bias.index_select(0, kept_t) if bias is not None else None,
        sums=sums.to(const.dtype),
        basis=basis.to(const.dtype),
        removed=len(gone_t),
        eps=eps,
        rms=rms,
        readers=readers,
        direct=direct,
        carries=carries,
    )


def apply_carried(gm: torch.fx.GraphModule, carried: CarriedNorm | CarriedGroupNorm) -> None:
    """Replace the held norm by its carried form (readers' weights are set by the caller)."""
    if isinstance(carried, CarriedGroupNorm):
        return apply_group(gm, carried)
    node = nodes_by_name(gm)[carried.node]
    base = f"legoc_{carried.node}"
    x = node.args[0]
    if carried.all_removed and not carried.carries:
        # every output is a constant its readers folded: what flows on is read by nothing
        # that stays (the stream's other writers keep their rows until dce as well)
        node.replace_all_uses_with(x)
        gm.graph.erase_node(node)
        return
    with gm.graph.inserting_before(node):
        if carried.all_removed:  # its producers keep their rows until dce: read none of them
            x = gm.graph.call_method("narrow", (x, -1, 0, 0))
        params = []
        for arg, value in ((node.args[1], carried.weight), (node.args[2], carried.bias)):
            if value is None:
                params.append(None)
                continue
            set_tensor(gm, arg, value)
            params.append(arg)
        sums = gm.graph.get_attr(add_tensor(gm, f"{base}_sums", carried.sums))
        basis = gm.graph.get_attr(add_tensor(gm, f"{base}_basis", carried.basis))
        args = (x, *params, sums, basis, carried.removed, carried.eps, carried.rms)
        if carried.direct is not None:
            direct = gm.graph.get_attr(add_tensor(gm, f"{base}_direct", carried.direct))
            args = (*args, direct)
        kwargs = {} if carried.carries else {"carries": False}
        new = gm.graph.call_function(ops.carried_norm, args, kwargs)
    new.meta = {k: v for k, v in node.meta.items() if k != "tensor_meta"}
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
