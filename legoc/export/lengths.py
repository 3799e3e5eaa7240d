"""The token lengths a block is checked at: shorter and longer than the search data, up to the
model's position limit. A block with a dynamic token axis is only as good as the lengths its
parity check ran at, so the metadata records exactly those (`legoc.sequence_lengths`)."""

from __future__ import annotations

from legoc.ir.tokens import with_length
from legoc.task.data import Split

EXTRA_ROWS = 16  # rows of `search` checked at each length other than its own, at most
# tokens per other length: at GPT-2's 1024 positions, 16 rows made the check hold 16 x 12 x 1024²
# attention scores per layer (GPT-2 small: 9.0 GiB peak; parity took 398 s of a 486 s export);
# one row checks the position limit as well
EXTRA_TOKENS = 1024
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
    """The first rows of `split` at `length` tokens (the split itself at its own): EXTRA_ROWS,
    or fewer where they would pass EXTRA_TOKENS tokens, one at least."""
    if length == search_length(split, tokens):
        return split
    count = max(1, min(EXTRA_ROWS, EXTRA_TOKENS // length))
    rows = {name: t[:count] for name, t in split.inputs.items()}
    return Split(f"{split.name} at {length} tokens", with_length(rows, tokens, length), None)
