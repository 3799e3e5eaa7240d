"""The token axis of a sequence model's graph: which inputs have one, which lengths the graph
accepts (recorded by the capture in `gm.meta[SEQUENCE]`), and which axis of each value follows
the token count (`node.meta[TOKEN_AXES]`, found by running the graph at a second length).

Constants that depend on position (folded ablations of a removed layer, per-position means) are
stored for the search data's positions plus one `tail` entry for positions past them, and cut to
the actual length in the graph (`positional`), so a block takes any accepted length.
"""

from __future__ import annotations

import torch
import torch.fx

SEQUENCE = "legoc.sequence_lengths"  # gm.meta key; the block metadata key of the same name
TOKEN_AXES = "legoc.token_axes"  # node.meta key: axes of the value that follow the token count


def sequence_of(gm: torch.fx.GraphModule) -> dict | None:
    """`{"inputs": [...], "min": n, "max": n | None}` (plus `fixed`: why, when the capture
    could not leave the axis dynamic); None when the graph has no token inputs."""
    return gm.meta.get(SEQUENCE)


def dynamic_tokens(lengths: dict | None) -> list[str]:
    """The inputs whose token axis is dynamic (none when the capture fixed it)."""
    if lengths is None or lengths["min"] == lengths["max"]:
        return []
    return list(lengths["inputs"])


def other_length(length: int, lengths: dict) -> int:
    """A second accepted length, to see which axes follow the token count."""
    if lengths["max"] is None or length + 1 <= lengths["max"]:
        return length + 1
    return length - 1


def with_length(inputs: dict[str, torch.Tensor], tokens: list[str], length: int) -> dict:
    """The inputs cut or right-padded with zeros (padding, with a zero attention mask) to
    `length` tokens; other inputs as they are."""
    resized = dict(inputs)
    for name in tokens:
        x = inputs[name]
        if x.shape[1] >= length:
            resized[name] = x[:, :length]
        else:
            pad = x.new_zeros((x.shape[0], length - x.shape[1]))
            resized[name] = torch.cat([x, pad], dim=1)
    return resized


def token_axis(node: torch.fx.Node) -> int | None:
    """The one axis of `node`'s value that follows the token count (None: none, or several)."""
    axes = node.meta.get(TOKEN_AXES, ())
    return axes[0] if len(axes) == 1 else None


def positional(value: torch.Tensor, axis: int, length) -> torch.Tensor:
    """`value` at positions 0..length-1 along `axis`: its stored positions, then its last entry
    (the tail) for every position past them. `length` may be a traced size."""
    stored = value.shape[axis] - 1
    tail = value.narrow(axis, stored, 1)
    shape = list(value.shape)
    shape[axis] = length
    extended = torch.cat([value.narrow(axis, 0, stored), tail.expand(*shape)], dim=axis)
    return extended[(slice(None),) * axis + (slice(0, length),)]
