"""Fold tensors a model builds from shapes alone into buffers at capture.

Swin's shift mask is `x.new_zeros((H, W))`, filled region by region through slices (in-place
writes into views), then reshaped and compared: under torch.export only the batch axis is
dynamic, so the mask is one constant. Kept as ops it would read the windowed stream (for its
dtype only), and the ONNX exporter loses in-place writes into views; folded, it is a buffer.
Only what derives from a `new_zeros` / `new_ones` of literal sizes is folded: parameters
(which slicing cuts) and everything computed from the inputs' values stay as they were.
"""

from __future__ import annotations

import torch
import torch.fx

from legoc.ir.graph import get_attr_tensor

_SEEDS = ("new_zeros", "new_ones")


def fold_built_constants(gm: torch.fx.GraphModule) -> int:
    """Replace each value derived from a literal-size `new_zeros` / `new_ones` (and other
    constants) by a buffer where a non-constant op reads it; returns how many were stored."""
    params = {name for name, _ in gm.named_parameters()}
    values: dict[torch.fx.Node, object] = {}
    derived: list[torch.fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            if node.target not in params:
                values[node] = get_attr_tensor(gm, node.target)
            continue
        if node.op not in ("call_function", "call_method"):
            continue
        seed = _is_seed(node)
        if not seed and not all(a in values for a in node.all_input_nodes):
            continue
        try:
            values[node] = _evaluate(node, values, seed)
        except Exception:  # not evaluable without the inputs: not a constant
            continue
        if seed or any(a in derived for a in node.all_input_nodes):
            derived.append(node)
    stored = 0
    done = set(derived)
    for node in derived:
        readers = [u for u in node.users if u not in done]
        if not readers or not isinstance(values[node], torch.Tensor):
            continue
        name = f"legoc_built_{node.name}"
        gm.register_buffer(name, values[node].detach().clone())
        with gm.graph.inserting_before(readers[0]):
            const = gm.graph.get_attr(name)
        const.meta = dict(node.meta)
        for reader in readers:
            reader.replace_input_with(node, const)
        stored += 1
    if stored:
        for node in reversed(derived):  # in-place writes have no users: all go, last first
            if not node.users:
                gm.graph.erase_node(node)
    return stored


def _is_seed(node: torch.fx.Node) -> bool:
    if node.op != "call_method" or node.target not in _SEEDS or len(node.args) < 2:
        return False
    sizes = node.args[1] if len(node.args) == 2 else node.args[1:]
    sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
    return all(isinstance(s, int) for s in sizes)


def _evaluate(node: torch.fx.Node, values: dict, seed: bool):
    if seed:  # reads only the dtype and device of its tensor
        val = node.args[0].meta.get("val")
        like = torch.empty(0, dtype=val.dtype if val is not None else torch.float32)
        args = (like, *torch.fx.node.map_arg(node.args[1:], values.__getitem__))
        return getattr(like, node.target)(*args[1:], **node.kwargs)
    args = torch.fx.node.map_arg(node.args, values.__getitem__)
    kwargs = torch.fx.node.map_arg(node.kwargs, values.__getitem__)
    with torch.no_grad():
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)
