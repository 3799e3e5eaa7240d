"""Graph-editing helpers shared by the rewrite passes."""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn

from legoc.ir.analysis import CONV_OPS, LINEAR_OPS, get_attr_tensor
from legoc.ir.core import IR
from legoc.ir.tokens import dynamic_tokens, sequence_of


def clone_ir(ir: IR) -> IR:
    """A deep copy of the IR so a pass never mutates its input."""
    gm = copy.deepcopy(ir.gm)
    other = copy.copy(ir)
    other.gm = gm
    other.kept = {k: v.copy() for k, v in ir.kept.items()}
    other.ablation = {k: v.clone() for k, v in ir.ablation.items()}
    return other


def nodes_by_name(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    return {n.name: n for n in gm.graph.nodes}


def set_tensor(gm: torch.fx.GraphModule, node: torch.fx.Node, value: torch.Tensor) -> None:
    """Give get_attr `node` a new tensor; a target shared with other nodes gets a fresh name."""
    target = node.target
    sharing = [
        n for n in gm.graph.nodes if n.op == "get_attr" and n.target == target and n is not node
    ]
    old = get_attr_tensor(gm, target)
    if sharing:
        target = fresh_name(gm, target)
        node.target = target
    _assign(gm, target, value, as_parameter=isinstance(old, nn.Parameter))


def set_shared_tensor(gm: torch.fx.GraphModule, target: str, value: torch.Tensor) -> None:
    """Give every get_attr node reading `target` a new tensor: a weight applied several times
    (`legoc.ir.weight_uses`) is cut once for all its uses, never copied per use."""
    _assign(gm, target, value, as_parameter=isinstance(get_attr_tensor(gm, target), nn.Parameter))


def applied_weights(gm: torch.fx.GraphModule) -> set[str]:
    """Weight targets that more than one Linear/Conv node applies."""
    seen: set[str] = set()
    again: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "call_function" and (node.target in LINEAR_OPS or node.target in CONV_OPS):
            weight = node.args[1]
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
                (again if weight.target in seen else seen).add(weight.target)
    return again


def add_tensor(
    gm: torch.fx.GraphModule, base: str, value: torch.Tensor, as_parameter: bool = False
) -> str:
    """Register a new tensor attribute under a fresh name derived from `base`."""
    target = fresh_name(gm, base)
    _assign(gm, target, value, as_parameter)
    return target


def fresh_name(gm: torch.nn.Module, base: str) -> str:
    index = 0
    while True:
        candidate = f"{base}_{index}" if index else base
        module_path, _, attr = candidate.rpartition(".")
        owner = gm.get_submodule(module_path) if module_path else gm
        if not hasattr(owner, attr):
            return candidate
        index += 1


def _assign(gm: torch.nn.Module, target: str, value: torch.Tensor, as_parameter: bool) -> None:
    module_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(module_path) if module_path else gm
    value = value.detach().contiguous()
    if hasattr(owner, attr):
        delattr(owner, attr)
    if as_parameter:
        owner.register_parameter(attr, nn.Parameter(value))
    else:
        owner.register_buffer(attr, value)


def set_arg(node: torch.fx.Node, index: int, name: str, value) -> None:
    if len(node.args) > index:
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    else:
        kwargs = dict(node.kwargs)
        kwargs[name] = value
        node.kwargs = kwargs


def first_placeholder(gm: torch.fx.GraphModule) -> torch.fx.Node:
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


def token_placeholder(gm: torch.fx.GraphModule) -> torch.fx.Node | None:
    """The first input with a dynamic token axis (None: the graph has none)."""
    tokens = dynamic_tokens(sequence_of(gm))
    return next((n for n in gm.graph.nodes if n.op == "placeholder" and n.target in tokens), None)
