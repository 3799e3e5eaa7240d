"""The token axis of sequence models: which inputs have one, and which lengths a capture accepts.

A block from a language model must take sentences of any length, not only the search data's.
Inputs that are integer tensors of shape (batch, tokens) (`input_ids`, `attention_mask`,
`token_type_ids`, ...) share one dynamic token axis when captured; the accepted range comes from
the exported graph's constraints (e.g. a position-embedding table of 512 rows) and the model's
configured position limit. The range travels with the graph (`legoc.ir.tokens`).
"""

from __future__ import annotations

import torch
from torch import nn

POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_seq_len")


def token_inputs(example: dict[str, torch.Tensor], input_names: list[str]) -> list[str]:
    """Inputs with a token axis (axis 1): integer tensors of shape (batch, tokens)."""
    return [
        name
        for name in input_names
        if example[name].dim() == 2
        and not example[name].is_floating_point()
        and example[name].dtype != torch.bool
    ]


def accepted_lengths(
    program: torch.export.ExportedProgram, tokens: list[str], module: nn.Module
) -> dict:
    """The token lengths the exported graph accepts: its range constraint on the token axis,
    bounded by the model's configured position limit when it has one."""
    length = _placeholder_shape(program, tokens[0])[1]
    if isinstance(length, int):  # the exporter specialised without complaint
        return fixed_lengths(tokens, length, "the exported graph fixes the token axis")
    ranges = {str(k): v for k, v in program.range_constraints.items()}
    bounds = ranges.get(str(length.node.expr))
    low = int(bounds.lower) if bounds is not None else 1
    high = _finite(bounds.upper) if bounds is not None else None
    limit = position_limit(module)
    if limit is not None:
        high = limit if high is None else min(high, limit)
    return {"inputs": list(tokens), "min": low, "max": high}


def fixed_lengths(tokens: list[str], length: int, reason: str) -> dict:
    """A capture whose token axis could not be left dynamic: the one length, and why."""
    return {"inputs": list(tokens), "min": length, "max": length, "fixed": reason[:300]}


def position_limit(module: nn.Module) -> int | None:
    """The smallest position limit any submodule's config declares (None: none declared)."""
    limits = [
        int(value)
        for m in module.modules()
        if (config := getattr(m, "config", None)) is not None
        for key in POSITION_LIMITS
        if isinstance(value := getattr(config, key, None), int) and value > 0
    ]
    return min(limits) if limits else None


def _placeholder_shape(program: torch.export.ExportedProgram, name: str):
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == name:
            return node.meta["val"].shape
    raise KeyError(name)


def _finite(value) -> int | None:
    if getattr(value, "is_finite", True) is False:  # sympy's (int_)oo: no bound
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return number if number < 2**62 else None
