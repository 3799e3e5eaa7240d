"""Slicing GQA attention: each kept query head reads its KV head through one gather.

Before slicing, `repeat_kv` repeats every KV head n_rep times (unsqueeze, expand, reshape). Once
some query heads of a group are gone the groups are uneven, so the repeat becomes
`ops.gather_heads(kv, axis, index)`: index[i] is the position, among the kept KV heads, of the
KV head the i-th kept query head reads. The repeat's own nodes are erased (they would repeat
the wrong counts). See `legoc.ir.handlers.shared_kv` for why query heads are units of their own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.units import SharedKV
from legoc.passes.rewrite.fold_ablations import removed_positions
from legoc.passes.rewrite.graph_edit import add_tensor


def gather_kept_heads(
    gm: torch.fx.GraphModule, nodes: dict[str, torch.fx.Node], share: SharedKV, removed
) -> int:
    """Replace the repeat feeding `share`'s attention argument by a gather of the kept KV
    heads (1), or leave it (0: nothing removed, or no query head left to read it)."""
    gone = removed_positions(share.query, removed)
    source_gone = removed_positions(share.source_ids, removed)
    if not gone.any() and not source_gone.any():
        return 0
    if gone.all():  # the output projection became a constant: nothing reads the heads
        return 0
    slots = share.slots[~gone]
    if source_gone[slots].any():
        raise ValueError(
            f"a kept query head of {share.node} reads a removed KV head: the mask breaks the "
            "dependency of a shared KV head on its query heads (use IR.mask_for)"
        )
    rank = np.cumsum(~source_gone) - 1
    attention, source = nodes[share.node], nodes[share.source]
    old = attention.args[share.arg]
    target = add_tensor(gm, f"legoc_kv_{share.node}_{share.arg}", torch.tensor(rank[slots]))
    with gm.graph.inserting_before(attention):
        index = gm.graph.get_attr(target)
        gathered = gm.graph.call_function(ops.gather_heads, (source, share.axis, index))
    args = list(attention.args)
    args[share.arg] = gathered
    attention.args = tuple(args)
    while old is not source and isinstance(old, torch.fx.Node) and not old.users:
        before = old.args[0]  # the repeat's chain, up to the source
        inputs = [a for a in old.all_input_nodes if a is not before]
        gm.graph.erase_node(old)
        for other in inputs:  # the index of an earlier gather
            if other.op == "get_attr" and not other.users:
                gm.graph.erase_node(other)
        old = before
    return 1
