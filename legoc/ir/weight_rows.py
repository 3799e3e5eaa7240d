"""Row ranges of one weight applied by separate layers: how their units are named.

nn.MultiheadAttention's cross attention splits its fused `in_proj_weight` into the query rows
(applied to the queries' input) and the key/value rows (applied to the memory). The frontend
gives each range a child module of the weight's owner, `<attr>__rows_<start>_of_<total>`
(`legoc.frontend.weight_rows`), so each range is a producer with units of its own; blocks and
reports name the units by the source module and row, as the contract wants:
`attn.in_proj_weight__rows_32_of_96` unit 5 is unit 37 of `attn`.
"""

from __future__ import annotations

import re

_ROWS = re.compile(r"^(?:(?P<owner>.+)\.)?(?P<attr>[^.]+?)__rows_(?P<start>\d+)_of_(?P<total>\d+)$")


def rows_module(attr: str, start: int, total: int) -> str:
    """The child module name of rows `start`.. of weight `attr` (`total` rows in all)."""
    return f"{attr}__rows_{start}_of_{total}"


def source_of(space: str) -> tuple[str, int, int] | None:
    """(source module, first row, the weight's rows) of a row-range space; None otherwise."""
    match = _ROWS.match(space)
    if match is None:
        return None
    owner = match["owner"] or match["attr"]  # a root weight: named as module_name_of does
    return owner, int(match["start"]), int(match["total"])


def merge_rows(kept: dict[str, list[int]], total: dict[str, int]):
    """`kept` / `total` with row-range spaces merged into their source module's rows."""
    merged_kept: dict[str, list[int]] = {}
    merged_total: dict[str, int] = {}
    for name, units in kept.items():
        source = source_of(name)
        if source is None:
            merged_kept[name], merged_total[name] = list(units), total.get(name, 0)
            continue
        owner, start, rows = source
        merged_kept.setdefault(owner, []).extend(start + u for u in units)
        merged_total[owner] = rows
    return {k: sorted(v) for k, v in sorted(merged_kept.items())}, dict(
        sorted(merged_total.items())
    )
