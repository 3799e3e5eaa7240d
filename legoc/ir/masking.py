"""The masked model: a copy of the IR graph with an `Ablate` module after every producer (or at
the space's site: a GQA query head's attention output, `legoc.ir.handlers.shared_kv`).

It is the oracle for everything legoc computes: scoring runs it, and every rewrite must agree
with it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.fx

from legoc.ir import ops
from legoc.ir.core import IR
from legoc.ir.ops import Ablate


def instrument(ir: IR) -> tuple[torch.fx.GraphModule, dict[str, Ablate]]:
    """A copy of the graph with an Ablate module after each producer, keyed by space name."""
    gm = copy.deepcopy(ir.gm)
    for param in gm.parameters():  # attribution follows gradients through every weight
        param.requires_grad_(param.is_floating_point())
    nodes = {n.name: n for n in gm.graph.nodes}
    ablates: dict[str, Ablate] = {}
    for i, (name, space) in enumerate(sorted(ir.spaces.items())):
        site = ir.analysis.sites.get(name)
        node = nodes[site] if site else unit_output(nodes[space.node])
        layout = ir.analysis.layouts[site or space.node]
        ndim = len(node.meta["tensor_meta"].shape)
        module = Ablate(space.size, layout.axis, ndim)
        target = f"legoc_ablate_{i}"
        gm.add_module(target, module)
        with gm.graph.inserting_after(node):
            ablate_node = gm.graph.call_module(target, (node,))
        node.replace_all_uses_with(
            ablate_node, delete_user_cb=lambda user, new=ablate_node: user is not new
        )
        ablates[name] = module
    gm.graph.lint()
    gm.recompile()
    return gm, ablates


def unit_output(node: torch.fx.Node) -> torch.fx.Node:
    """Where a producer's units are complete: after any constant fold-ablations added to it."""
    users = _value_users(node)
    while len(users) == 1 and users[0].meta.get("legoc.folded"):
        node = users[0]
        users = _value_users(node)
    return node


def _value_users(node: torch.fx.Node) -> list[torch.fx.Node]:
    """Users that read the value (a token_constant reads only its shape)."""
    return [u for u in node.users if u.target is not ops.token_constant]


def set_masks(
    ablates: dict[str, Ablate],
    kept: dict[str, np.ndarray],
    values: dict[str, torch.Tensor] | None = None,
) -> None:
    for name, module in ablates.items():
        value = values.get(name) if values is not None else None
        module.set(torch.from_numpy(np.ascontiguousarray(kept[name])), value)


def masked_model(ir: IR) -> torch.fx.GraphModule:
    """The IR's graph with its own kept mask and ablation values applied in-graph."""
    gm, ablates = instrument(ir)
    set_masks(ablates, ir.kept, ir.ablation)
    return gm.eval()
