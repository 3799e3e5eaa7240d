"""What `extract` returns: the block's description, as the summary and metadata show it."""

from __future__ import annotations

from dataclasses import dataclass, field

from legoc.ir.core import IR
from legoc.scoring.prepare import SplitScore


@dataclass
class ExtractResult:
    task: str
    output: str | None
    kept: dict[str, list[int]]
    total: dict[str, int]
    params_source: int
    params_block: int
    faithfulness: float
    scores: dict[str, SplitScore]
    evaluations: int
    method: str
    seconds: float
    parity_max_abs_diff: float | None
    one_minimal: bool
    keep: float = 0.0
    seed: int = 0
    passes: list[tuple[str, dict]] = field(default_factory=list)
    training: dict | None = None
    layout: dict | None = None  # what align-channels padded (legoc.layout)
    validate: dict | None = None  # search.validate: faithfulness on both parts and their gap
    trace: list[dict] = field(default_factory=list, repr=False)
    replayed: int = 0  # evaluations answered from a checkpoint (--resume)
    paid: int = 0  # evaluations that ran the model
    budget: dict = field(default_factory=dict)  # Found.budget: the work charged and its limits
    warnings: list[str] = field(default_factory=list)
    frozen: dict = field(default_factory=dict)  # legoc.ir.frozen.frozen_report: what froze

    @property
    def params_stored(self) -> int:
        """Float elements the block file stores: params.block plus any zero channels that
        channel alignment pads in for speed (those are not parameters)."""
        return (self.layout or {}).get("stored_params", self.params_block)

    def summary(self) -> dict:
        return {
            "task": self.task,
            "output": self.output,
            "units_kept": {name: f"{len(k)}/{self.total[name]}" for name, k in self.kept.items()},
            "params": {
                "source": self.params_source,
                "block": self.params_block,
                "stored": self.params_stored,
            },
            "faithfulness": round(self.faithfulness, 6),
            "scores": {
                name: {k: round(v, 6) for k, v in vars(s).items()}
                for name, s in self.scores.items()
            },
            "evaluations": self.evaluations,
            "budget": self.budget,
            "warnings": self.warnings,
            "frozen": self.frozen,
            "method": self.method,
            "one_minimal": self.one_minimal,
            "seconds": round(self.seconds, 2),
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "passes": {name: stats for name, stats in self.passes},
            "training": self.training,
            "layout": self.layout,
            "validate": self.validate,
        }


@dataclass
class Found:
    """A searched rationale: the IR with its mask, and how the search got there."""

    ir: IR
    faithfulness: float
    evaluations: int
    one_minimal: bool
    reports: list[tuple[str, dict]]
    trace: list[dict]
    # the work charged: {"limit", "used", "evaluations", "gradient", "mask_steps",
    # "time_limit", "stopped_by"}; stopped_by is "budget" or "time-limit" when that ended the
    # search before it converged (then the result is the best faithful one found)
    budget: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def stopped_by(self) -> str | None:
        return self.budget.get("stopped_by")
