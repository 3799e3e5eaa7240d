"""Shapes: every tensor's shape and dtype recorded in `node.meta`, with the dims that follow the
batch size marked N (what the text form prints and batch sizing reads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from legoc.ir.graph import shape_of
from legoc.ir.tokens import TOKEN_AXES, dynamic_tokens, other_length, sequence_of, with_length


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
    _mark_token_axes(gm, example, input_names, shapes1)


def _mark_token_axes(
    gm: torch.fx.GraphModule,
    example: dict[str, torch.Tensor],
    input_names: list[str],
    one_row: dict[str, tuple[int, ...] | None],
) -> None:
    """node.meta[TOKEN_AXES]: the axes that change when one row (`one_row`: its shapes) runs
    at a second token length (graphs captured with a dynamic token axis only)."""
    lengths = sequence_of(gm)
    tokens = [name for name in dynamic_tokens(lengths) if name in example]
    if not tokens:
        return
    length = int(example[tokens[0]].shape[1])
    resized = with_length(
        {n: example[n][:1] for n in input_names}, tokens, other_length(length, lengths)
    )
    shapes = {}

    class Shapes(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                shapes[n.name] = tuple(result.shape)
            return result

    with torch.no_grad():
        Shapes(gm).run(*[resized[name] for name in input_names])
    for node in gm.graph.nodes:
        here, there = one_row.get(node.name), shapes.get(node.name)
        if here is not None and there is not None and len(here) == len(there):
            node.meta[TOKEN_AXES] = tuple(i for i, (a, b) in enumerate(zip(here, there)) if a != b)
        else:
            node.meta.pop(TOKEN_AXES, None)
