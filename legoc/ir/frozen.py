"""What froze, said per module: the construct, the op and node that froze it, and the share of
units in scope the analysis could not make removable.

A construct legoc does not understand must never be silent: `inspect` prints these lines and
`extract` puts them in its summary (and fails when nothing at all can be removed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from legoc.ir.weight_uses import first_use_of

if TYPE_CHECKING:
    from legoc.ir.core import IR

OUTSIDE_SCOPE = "outside scope"
# the units the task reads: not removable by design, so not counted as the analysis' failure
AT_OUTPUT = "reaches the model output"
# above this share of frozen units in scope, extract warns that the block is mostly the model
FROZEN_SHARE_WARNING = 0.5


@dataclass(frozen=True)
class FrozenUnits:
    """Units of one module frozen for one reason."""

    module: str
    units: int
    total: int
    why: str
    at: str | None  # "aten.expand at node repeat_kv_3": the op and node that froze them

    def line(self) -> str:
        where = f" by {self.at}" if self.at else ""
        return f"{self.module}: {self.units}/{self.total} units frozen{where} ({self.why})"

    def as_dict(self) -> dict:
        return {
            "module": self.module,
            "units": self.units,
            "total": self.total,
            "why": self.why,
            "at": self.at,
        }


def frozen_units(ir: IR) -> list[FrozenUnits]:
    """Per module and reason, the frozen units in scope (largest first); units feeding the
    model's output and units outside scope are not listed."""
    counts: dict[tuple[str, str, str | None], int] = {}
    for group in ir.groups:
        if group.frozen is None or group.frozen in (OUTSIDE_SCOPE, AT_OUTPUT):
            continue
        for space, _ in once(group.members):
            key = (space, group.frozen, group.frozen_at)
            counts[key] = counts.get(key, 0) + 1
    rows = [
        FrozenUnits(module, n, ir.spaces[module].size, why, at)
        for (module, why, at), n in counts.items()
    ]
    return sorted(rows, key=lambda r: (-r.units, r.module, r.why))


def once(members) -> list[tuple[str, int]]:
    """Members without a weight's repeated uses: a unit of a shared layer is counted once."""
    return [(space, unit) for space, unit in members if first_use_of(space) is None]


def frozen_share(ir: IR) -> tuple[int, int]:
    """(frozen units, units in scope), not counting units that feed the model's output."""
    frozen = in_scope = 0
    for group in ir.groups:
        if group.frozen in (OUTSIDE_SCOPE, AT_OUTPUT):
            continue
        units = len(once(group.members))
        in_scope += units
        frozen += units if group.frozen is not None else 0
    return frozen, in_scope


def frozen_report(ir: IR, top: int = 5) -> dict:
    """The summary's `frozen` entry: counts, share and the largest frozen constructs."""
    frozen, in_scope = frozen_share(ir)
    rows = frozen_units(ir)
    return {
        "units": frozen,
        "in_scope": in_scope,
        "share": round(frozen / in_scope, 4) if in_scope else 0.0,
        "removable_groups": len(ir.removable_groups()),
        "modules": [row.as_dict() for row in rows[:top]],
        "more": max(0, len(rows) - top),
    }


def frozen_warning(ir: IR, top: int = 3) -> str | None:
    """A warning when more than half of the units in scope are frozen, naming what froze."""
    frozen, in_scope = frozen_share(ir)
    if not in_scope or frozen / in_scope <= FROZEN_SHARE_WARNING:
        return None
    named = "; ".join(row.line() for row in frozen_units(ir)[:top])
    return (
        f"{frozen} of {in_scope} units in scope ({frozen / in_scope:.0%}) are frozen, so the "
        f"block keeps most of the model: {named}; `legoc inspect` lists every frozen module"
    )


def nothing_removable(ir: IR, top: int = 3) -> str:
    """Why no unit can be removed: the message of the error extract raises then."""
    rows = frozen_units(ir)
    named = "; ".join(row.line() for row in rows[:top]) if rows else "every unit feeds the output"
    return (
        f"no unit of the model can be removed, so a block would equal the model: {named}; "
        "`legoc inspect MODEL` lists every frozen module and the op that froze it"
    )
