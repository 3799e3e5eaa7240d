"""What `legoc compare` produces: its runs (scored in onnxruntime, per row), the per-split
verdicts, and the summary table. Kept apart from the orchestration so reports and tests can use
results without running anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from legoc.experiment.verdict import Comparison, compare_options, mean_std, strong_case
from legoc.runtime.block import Block
from legoc.runtime.flops import macs_per_example
from legoc.runtime.scores import load_split, logits_of, metric_rows

OPTIONS = ("A", "B", "C")
PLAIN = "plain"  # the variant searched with the spec's scope and no guard


@dataclass
class Run:
    """One exported result: which option and seed, its size and its score on every split."""

    option: str  # A, B, C, or "full" (the source model, for reference)
    seed: int | None
    path: str | None  # relative to the report folder
    status: str = "ok"  # ok, or why there is no block (e.g. keep not met)
    params: int = 0
    macs: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # per-row scores
    keep: float | None = None  # the keep level B was searched at (A and C: their B's)
    variant: str = PLAIN  # plain, guard, or a scope set's name

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("rows")
        return data


@dataclass
class SplitVerdict:
    split: str
    b_vs_a: Comparison
    b_vs_c: Comparison
    weak: str
    strong: str
    keep: float | None = None

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "keep": self.keep,
            "weak": self.weak,
            "strong": self.strong,
            "b_vs_a": self.b_vs_a.to_dict(),
            "b_vs_c": self.b_vs_c.to_dict(),
        }


@dataclass
class CompareResult:
    task: str
    metric: str
    higher_is_better: bool
    splits: list[str]
    seeds: list[int]
    settings: dict
    runs: list[Run]
    verdicts: list[SplitVerdict]
    output: str
    seconds: float = 0.0
    levels: list[float] = field(default_factory=list)  # keep levels, strictest first
    variants: list[str] = field(default_factory=lambda: [PLAIN])
    chance: dict[str, float] = field(default_factory=dict)  # per split, where the metric has one
    size_axis: str = "params"  # what the curves' crossovers are measured in (params or macs)

    def ok_runs(
        self, option: str, keep: float | None = None, variant: str | None = None
    ) -> list[Run]:
        """The runs with a block of `option` (at `keep`, of `variant`, when given)."""
        return [
            r
            for r in self.runs
            if r.option == option
            and r.status == "ok"
            and (keep is None or r.option == "full" or r.keep == keep)
            and (variant is None or r.option == "full" or r.variant == variant)
        ]

    def table(self, keep: float | None = None, variant: str | None = None) -> list[dict]:
        """Per option: params, MACs and each split's score as (mean, std) over seeds."""
        rows = []
        for option in ("full", *OPTIONS):
            runs = self.ok_runs(option, keep, variant)
            if not runs:
                continue
            rows.append(
                {
                    "option": option,
                    "keep": keep,
                    "variant": variant,
                    "runs": len(runs),
                    "params": mean_std([r.params for r in runs]),
                    "macs": mean_std([r.macs for r in runs]),
                    "scores": {s: mean_std([r.scores[s] for r in runs]) for s in self.splits},
                }
            )
        return rows


def verdicts(result: CompareResult, margin: float) -> list[SplitVerdict]:
    """Weak and strong case per split and keep level from the plain variant's per-row scores
    (a level where no seed's rationale met keep has none)."""
    out = []
    for keep in result.levels or [None]:
        runs = {o: result.ok_runs(o, keep, PLAIN) for o in OPTIONS}
        if not all(runs.values()):
            continue
        for split in result.splits:
            rows = {o: np.stack([r.rows[split] for r in runs[o]]) for o in OPTIONS}
            higher = result.higher_is_better
            b_vs_a = compare_options("B", "A", rows["B"], rows["A"], higher, margin)
            b_vs_c = compare_options("B", "C", rows["B"], rows["C"], higher, margin)
            strong = strong_case(b_vs_a, b_vs_c)
            out.append(SplitVerdict(split, b_vs_a, b_vs_c, b_vs_a.answer, strong, keep))
    return out


def score_runs(
    folder: Path, input_names: list[str], splits: dict[str, Path], metric: str, runs: list[Run]
) -> None:
    """Every exported run in onnxruntime on every split: params, MACs, per-row scores. The
    full model's run must come first: its logits are kl's reference."""
    data = {s: load_split(s, p, input_names, f"data {s}") for s, p in splits.items()}
    reference: dict[str, np.ndarray] = {}
    for run in runs:
        if run.status != "ok":
            continue
        block = Block.load(folder / run.path, threads=1)
        run.params = run.params or block.rationale_params()  # the full run's is preset
        run.macs = macs_per_example(block.model)
        for name, split in data.items():
            logits = logits_of(lambda feeds, block=block: block.run(feeds)["logits"], split)
            if run.option == "full":
                reference[name] = logits
            rows = metric_rows(metric, logits, split.y, reference.get(name), split.y_alt)
            run.rows[name] = rows
            run.scores[name] = float(rows.mean())
