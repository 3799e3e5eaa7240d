"""One handler per op kind: how an op moves, couples or freezes the units it reads.

A handler is `handler(walk, node, tracked) -> Layout | None`: given the propagation state
(`legoc.ir.analysis.Propagation`), a node of its kind and the node's inputs that carry units,
it returns the layout of the node's output (None: it carries no units), recording couplings,
freezes, readers and per-unit parameters on `walk`. To add an op kind: list its ops in
`legoc.ir.vocabulary.KINDS`, write its handler (a function in a module of its own), and add one
line to `HANDLERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.fx

from legoc.ir.handlers import (
    attention,
    attention_scores,
    binary,
    cat,
    expand,
    group_norm,
    norm,
    pad,
    permute,
    pool,
    producer,
    reduce,
    reshape,
    roll,
    select,
    shape,
    shared_kv,
    slicing,
    split,
    unary,
)
from legoc.ir.units import Layout

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

Handler = Callable[["Propagation", torch.fx.Node, list[torch.fx.Node]], Layout | None]

HANDLERS: dict[str, Handler] = {
    "producer": producer.producer,
    "unary": unary.unary,
    "pool": pool.pool,
    "batch_norm": norm.batch_norm,
    "layer_norm": norm.layer_norm,
    "carried_norm": norm.carried_norm,
    "group_norm": group_norm.group_norm,
    "carried_group_norm": norm.carried_norm,
    "binary": binary.binary,
    "cat": cat.cat,
    "reshape": reshape.reshape,
    "reduce": reduce.reduce,
    "permute": permute.permute,
    "roll": roll.roll,
    "pad": pad.pad,
    "select_outputs": select.select_outputs,
    "attention": attention.attention,
    "matmul": attention_scores.matmul,
    "softmax": attention_scores.softmax,
    "split": split.split,
    "slice": slicing.slice_dim,
    "select": slicing.select,
    "unsqueeze": expand.unsqueeze,
    "expand": expand.expand,
    "gather_heads": shared_kv.gather_heads,
    "getitem": split.getitem,
    "size": shape.size,
}

# kinds whose output can carry units when none of their inputs does: the rest are skipped then
SOURCES = {"producer", "getitem"}


def unsupported(walk: Propagation, node: torch.fx.Node, tracked: list[torch.fx.Node]) -> None:
    """An op of no known kind (or used in a way its handler does not follow)."""
    return walk.cannot_slice(node)
