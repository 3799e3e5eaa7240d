"""A weight applied by several Linear layers (ALBERT's shared layer): how its uses are named.

Each application of the weight is a producer with units of its own, so each use is ablated at
its own output with its own constant (the mean over the data *at that use*); the analysis
couples unit i of every use into one group, because the weight's row i is sliced once for all
of them. The first use keeps the module's name; use k (k >= 1, in graph order) is the space
`<module>__use_<k>`. Blocks and reports name the units by the module alone (the contract):
every use keeps the same units, so the extra spaces are dropped there.
"""

from __future__ import annotations

import re

_USE = re.compile(r"^(?P<module>.+)__use_(?P<k>\d+)$")


def use_space(module: str, k: int) -> str:
    """The space of the k-th application (k >= 1) of `module`'s weight."""
    return f"{module}__use_{k}"


def first_use_of(space: str) -> str | None:
    """The module whose weight `space` applies again; None for a first (or only) use."""
    match = _USE.match(space)
    return match["module"] if match else None


def drop_repeated_uses(kept: dict[str, list[int]], total: dict[str, int]):
    """`kept` / `total` without the spaces of repeated uses (their units are the first use's)."""
    return (
        {name: units for name, units in kept.items() if first_use_of(name) is None},
        {name: size for name, size in total.items() if first_use_of(name) is None},
    )
