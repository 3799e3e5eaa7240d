"""torch.fx helpers the IR modules share: a node's shape, the tensor a get_attr node reads, the
module a weight belongs to, an op's name in messages, an argument by position or keyword."""

from __future__ import annotations

import torch
import torch.fx

Node = torch.fx.Node


def arg(node: Node, index: int, name: str, default=None):
    """Argument `index` of a call, passed positionally or by keyword `name`."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def shape_of(node: Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def is_param(gm: torch.nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def get_attr_tensor(gm: torch.nn.Module, target: str) -> torch.Tensor:
    """The tensor (parameter, buffer or plain attribute) a get_attr node with `target` reads."""
    module_path, _, attr = target.rpartition(".")
    owner = gm.get_submodule(module_path) if module_path else gm
    return getattr(owner, attr)


def module_name_of(weight_target: str) -> str:
    return weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target


def op_name(node: Node) -> str:
    """How messages name the op a node applies: a module path, `.method()` or a function."""
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f".{node.target}()"
    if isinstance(node.target, torch._ops.OpOverload):  # torch.export's aten ops: aten.expand
        return f"{node.target.namespace}.{node.target._opname}"
    return getattr(node.target, "__name__", str(node.target))
