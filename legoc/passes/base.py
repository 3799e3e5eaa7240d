"""What every pass returns, and the runner that names the failing pass and those before it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from legoc.errors import LegocError
from legoc.ir.core import IR

CHANGE_SUFFIXES = ("_removed", "_folded", "_added", "_sliced", "_rewritten", "_constant")


@dataclass
class PassResult:
    ir: IR
    stats: dict[str, int | float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(v for k, v in self.stats.items() if k.endswith(CHANGE_SUFFIXES))


class Pass(Protocol):
    name: str

    def run(self, ir: IR) -> PassResult: ...


class PassFailed(LegocError):
    """A pass raised: the message names it and the passes that ran before it."""

    exit_code = 1


def run_pipeline(ir: IR, passes: list[Pass]) -> tuple[IR, list[tuple[str, dict]]]:
    reports: list[tuple[str, dict]] = []
    for p in passes:
        try:
            result = p.run(ir)
        except LegocError:
            raise
        except Exception as exc:  # noqa: BLE001 - wrap with pipeline context
            before = ", ".join(name for name, _ in reports) or "none"
            raise PassFailed(
                f"pass {p.name} failed ({exc.__class__.__name__}: {exc}); passes run before it: "
                f"{before}; this is a legoc bug, please report it with --debug output"
            ) from exc
        reports.append((p.name, result.stats))
        ir = result.ir
    return ir, reports
