"""Shapes: every tensor's shape and dtype recorded in `node.meta`, with the dims that follow the
batch size marked N (what the text form prints and batch sizing reads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from legoc.ir.graph import shape_of


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: torch.dtype


class _ShapeRecorder(torch.fx.Interpreter):
    """Records each tensor's shape and dtype in node.meta['tensor_meta'] (fx's ShapeProp does
    the same but prints tracebacks to stderr when the data does not fit the model)."""

    def run_node(self, n: torch.fx.Node):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["tensor_meta"] = TensorMeta(tuple(result.shape), result.dtype)
        else:
            n.meta.pop("tensor_meta", None)
        return result


def run_quietly(gm: torch.fx.GraphModule, args: list[torch.Tensor]):
    """Run a graph without fx printing its generated code when the inputs do not fit."""
    with torch.no_grad():
        return torch.fx.Interpreter(gm).run(*args)


def propagate_shapes(
    gm: torch.fx.GraphModule, example: dict[str, torch.Tensor], input_names: list[str]
) -> None:
    """Annotate tensor_meta, and mark which dims follow the batch size (shown as N)."""
    args1 = [example[name][:1] for name in input_names]
    args2 = [example[name][:2] for name in input_names]
    with torch.no_grad():
        _ShapeRecorder(gm).run(*args1)
        shapes1 = {n.name: shape_of(n) for n in gm.graph.nodes}
        _ShapeRecorder(gm).run(*args2)
    for node in gm.graph.nodes:
        s1, s2 = shapes1.get(node.name), shape_of(node)
        if s1 is not None and s2 is not None and len(s1) == len(s2):
            node.meta["legoc.shape"] = tuple("N" if a != b else a for a, b in zip(s1, s2))
        else:
            node.meta.pop("legoc.shape", None)
