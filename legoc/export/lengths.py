"""The token lengths a block is checked at: shorter and longer than the search data, up to the
model's position limit. A block with a dynamic token axis is only as good as the lengths its
parity check ran at, so the metadata records exactly those (`legoc.sequence_lengths`)."""

from __future__ import annotations

from legoc.ir.tokens import with_length
from legoc.task.data import Split

EXTRA_ROWS = 16  # rows of `search` checked at each length other than its own
UNBOUNDED_FACTOR = 4  # no position limit: checked up to this multiple of the search length


def search_length(split: Split, tokens: list[str]) -> int:
    return int(split.inputs[tokens[0]].shape[1])


def checked_lengths(length: int, low: int, high: int | None) -> list[int]:
    """Half, once, twice and four times the search length, and the position limit, within the
    accepted range [low, high] (four times the search length at most when unbounded)."""
    cap = high if high is not None else UNBOUNDED_FACTOR * length
    wanted = {max(length // 2, 1), length, 2 * length, 4 * length, cap}
    return sorted(n for n in wanted if max(low, 1) <= n <= cap)


def resized_split(split: Split, tokens: list[str], length: int) -> Split:
    """The first EXTRA_ROWS rows of `split` at `length` tokens (the split itself at its own)."""
    if length == search_length(split, tokens):
        return split
    rows = {name: t[:EXTRA_ROWS] for name, t in split.inputs.items()}
    return Split(f"{split.name} at {length} tokens", with_length(rows, tokens, length), None)
