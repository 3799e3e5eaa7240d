"""A Linear's weight applied a second time to a constant, its output read only as attention
scores: DeBERTa's `share_att_key`, where `query_proj` / `key_proj` also project the relative
position embeddings into per-head positional queries and keys.

The second application (the *alias*) carries the same units as the first: slicing the weight's
rows slices both. The masked model ablates the first application only, so the alias's removed
rows keep their values there; that is exact only where those values cannot matter. They do not
when they reach nothing but the scores of their own heads: a removed head's values are
constants, which its probabilities (whatever they are) give back unchanged. So an alias is
followed through shape ops to a matmul that starts attention scores, and anything else that
reads it freezes its units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.fx import Node

from legoc.ir.graph import op_name
from legoc.ir.units import Layout
from legoc.ir.vocabulary import LINEAR_OPS, bias_target, classify

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation

SHAPE_KINDS = {"reshape", "permute", "expand", "unsqueeze"}


def find_aliases(gm: torch.fx.GraphModule, first: dict[str, Node]) -> dict[str, str]:
    """{linear node: the node that applies the same weight and bias first}, for second
    applications to an input computed from weights alone; `first` maps weights to nodes."""
    aliases = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in LINEAR_OPS or len(node.args) < 2:
            continue
        weight = node.args[1]
        owner = first.get(getattr(weight, "target", None))
        if owner is None or owner is node or bias_target(owner) != bias_target(node):
            continue
        if owner.target in LINEAR_OPS and _constant(node.args[0]):
            aliases[node.name] = owner.name
    return aliases


def _constant(value) -> bool:
    """Whether a value depends on no model input (weights and literals only)."""
    stack, seen = [value], set()
    while stack:
        node = stack.pop()
        if not isinstance(node, Node) or node in seen:
            continue
        seen.add(node)
        if node.op == "placeholder":
            return False
        stack.extend(node.all_input_nodes)
    return True


def follow_alias(walk: Propagation, node: Node, layout: Layout | None) -> None:
    """After `node` was visited: carry the alias on through shape ops; a matmul that started
    scores ends it; any other reader freezes its units."""
    origins = {walk.alias_of[a.name] for a in node.all_input_nodes if a.name in walk.alias_of}
    if not origins:
        return
    kind = classify(walk.gm, node)
    if layout is not None and kind in SHAPE_KINDS:
        walk.alias_of[node.name] = next(iter(origins))
        return
    if node.name in walk.scores:
        return
    for arg in node.all_input_nodes:
        if arg.name in walk.alias_of and arg.name in walk.layouts:
            walk.freeze(
                walk.layouts[arg.name].ids,
                f"a weight applied twice: its second use ({walk.alias_of[arg.name]}) is read by "
                f"{op_name(node)}, not only by attention scores",
            )
