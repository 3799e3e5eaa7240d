"""The compare report: report.json (everything), report.md (tables and verdicts in words) and a
score-vs-params plot per split with every run as a point."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from legoc.experiment import sweep_report
from legoc.experiment.result import CompareResult
from legoc.experiment.verdict import describe_method

REPORT_MARKER, REPORT_FORMAT = "legoc_compare", 1  # in report.json: what --force may replace
LABELS = {
    "full": "full model (reference)",
    "A": "A: small net from scratch",
    "B": "B: rationale, as is",
    "C": "C: rationale, retrained",
}
COLOURS = {"full": "#555555", "A": "#1f77b4", "B": "#d62728", "C": "#2ca02c"}
MARKERS = {"full": "*", "A": "o", "B": "s", "C": "^"}


def write_report(folder: Path, result: CompareResult) -> list[Path]:
    """Write report.json, report.md and score_vs_params_<split>.png into `folder` (and, for a
    size curve, curve_<axis>_<split>.png)."""
    sweep = sweep_report.is_sweep(result)
    plots = (
        sweep_report.plots(folder, result)
        if sweep
        else [_plot(folder, result, split) for split in result.splits]
    )
    payload = {
        REPORT_MARKER: REPORT_FORMAT,
        "task": result.task,
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "splits": result.splits,
        "seeds": result.seeds,
        "settings": result.settings,
        "command": command_line(result),
        "table": result.table(),
        "verdicts": [v.to_dict() for v in result.verdicts],
        "runs": [r.to_dict() for r in result.runs],
        "plots": [p.name for p in plots],
        "seconds": round(result.seconds, 1),
    }
    if sweep:
        payload["sweep"] = sweep_report.payload(result)
    (folder / "report.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    (folder / "report.md").write_text(markdown(result, plots))
    return [folder / "report.json", folder / "report.md", *plots]


def command_line(result: CompareResult) -> str:
    """The command that reproduces the run (from its settings)."""
    s = result.settings
    parts = ["legoc", "compare", s["model"], "--task", s["task_spec"]]
    if s.get("arch"):
        parts += ["--arch", s["arch"]]
    if s.get("trust_model"):
        parts.append("--trust-model")
    parts += ["--seeds", str(s["seeds"]), "--method", s["method"], "--budget", str(s["budget"])]
    if s["margin"]:
        parts += ["--margin", str(s["margin"])]
    for option, value in s.get("overrides", {}).items():
        parts += [
            f"--{option.replace('_', '-')}",
            f"{value:g}" if isinstance(value, float) else str(value),
        ]
    parts += ["-o", Path(result.output).name]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt(value: tuple[float, float], digits: int = 3) -> str:
    mean, std = value
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_count(value: tuple[float, float]) -> str:
    mean, std = value
    return f"{mean:,.0f}" if std == 0 else f"{mean:,.0f} ± {std:,.0f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def results_table(result: CompareResult) -> str:
    """The markdown table of params, MACs and score per split (mean ± std over seeds), per
    keep level and variant when there are several."""
    head = ["option", "runs", "params", "MACs / example", *result.splits]
    cells_of = [(None, None)]
    if sweep_report.is_sweep(result):
        head = ["keep", "variant", *head]
        cells_of = [(k, v) for v in result.variants for k in result.levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [
        row
        for keep, variant in cells_of
        for row in result.table(keep, variant)
        if keep is None or row["option"] != "full" or (keep, variant) == cells_of[0]
    ]
    for row in rows:
        where = (
            []
            if cells_of == [(None, None)]
            else [
                "" if row["option"] == "full" else f"{row['keep']:g}",
                "" if row["option"] == "full" else row["variant"],
            ]
        )
        cells = [
            *where,
            LABELS[row["option"]],
            str(row["runs"]),
            _fmt_count(row["params"]),
            _fmt_count(row["macs"]),
            *(_fmt(row["scores"][s]) for s in result.splits),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(result: CompareResult) -> str:
    levels = len(result.levels) > 1
    head = [
        *(["keep"] if levels else []),
        "split",
        "weak case: B ≥ A",
        "strong case: B ≥ A and B ≥ C",
        "B − A [95% CI]",
        "B − C [95% CI]",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in result.verdicts:
        split = f"{v.split} (seen in training)" if v.split == "search" else v.split
        cells = [
            *([f"{v.keep:g}"] if levels else []),
            split,
            f"**{v.weak}**",
            f"**{v.strong}**",
            f"{_signed(v.b_vs_a.difference)} [{_signed(v.b_vs_a.low)}, {_signed(v.b_vs_a.high)}]",
            f"{_signed(v.b_vs_c.difference)} [{_signed(v.b_vs_c.low)}, {_signed(v.b_vs_c.high)}]",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: CompareResult, plots: list[Path]) -> str:
    s = result.settings
    direction = "higher" if result.higher_is_better else "lower"
    seeds = {o: len(result.ok_runs(o)) for o in ("A", "B", "C")}
    margin = s["margin"]
    threshold = "0" if not margin else f"−{margin} (the non-inferiority margin)"
    failed = [r for r in result.runs if r.status != "ok"]
    text = [
        f"# legoc compare: {result.task}",
        "",
        "```",
        command_line(result),
        "```",
        "",
        f"Metric: **{result.metric}** on each split against its labels ({direction} is "
        "better) — the raw task metric, not faithfulness. Every result is the exported ONNX "
        "file scored in onnxruntime on every split. Seeds: "
        f"{', '.join(str(x) for x in result.seeds)}; B's seed is the search seed, C retrains "
        "B's block of the same seed, A is sized to that block's parameter count. Params: the "
        "full model's trainable parameters (`model.parameters()`); a block's own weights "
        "(BatchNorm folded into its convs).",
        "",
        "- **B**: rationale found by search "
        f"(`{s['method']}`, budget {s['budget']}, keep {s['keep']}), exported as is.",
        f"- **C**: B's block retrained on `search` ({s['finetune']['epochs']} epochs max, "
        f"lr {s['finetune']['lr']}, Adam, 20% of `search` held out for early stopping).",
        f"- **A**: a `{s['baseline']['family']}` trained from scratch on `search` only "
        f"({s['baseline']['epochs']} epochs max, lr {s['baseline']['lr']}, same loss, "
        "validation carve-out and early stopping as C).",
        "",
        "## Results (mean ± std over seeds)",
        "",
        results_table(result),
        "",
        "## Verdicts",
        "",
        verdict_table(result),
        "",
        'Differences are oriented so that positive favours B. A comparison is "yes" when '
        f'the 95% interval of the difference lies entirely above {threshold}, "no" when it '
        'lies entirely below, "not significant" when it straddles. The strong case is '
        '"yes" only when both of its comparisons are. '
        f"Interval: {describe_method(seeds)}; 4000 replicates. With few seeds the interval is "
        'wide, so "not significant" often means "run more seeds", not "equal". The true '
        "task is the eval splits; `search` is what every option searched or trained on.",
        "",
        "## Runs",
        "",
        _runs_table(result),
        "",
    ]
    if sweep_report.is_sweep(result):
        text += sweep_report.markdown(result, plots)
    text += _training_notes(result)
    if failed:
        text += [f"{len(failed)} run(s) produced no block: see the status column.", ""]
    text += ["Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in plots), ""]
    text.append(f"Wall time: {result.seconds:.0f} s.")
    return "\n".join(text) + "\n"


def _training_notes(result: CompareResult) -> list[str]:
    """Say when training was still improving at its epoch cap: more epochs might change A or C."""
    notes = []
    for option in ("A", "C"):
        runs = result.ok_runs(option)
        capped = [r for r in runs if r.details.get("best_epoch") == r.details.get("epochs")]
        if capped:
            cap = capped[0].details["epochs"]
            notes.append(
                f"{option}: in {len(capped)} of {len(runs)} runs the best validation loss came at "
                f"the last allowed epoch ({cap}): training was still improving when it stopped."
            )
    return [*notes, ""] if notes else []


def _runs_table(result: CompareResult) -> str:
    sweep = sweep_report.is_sweep(result)
    head = ["option", "seed", "status", "params", "MACs", *result.splits, "file"]
    head = ["keep", "variant", *head] if sweep else head
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in result.runs:
        scores = [f"{run.scores[s]:.4f}" if s in run.scores else "" for s in result.splits]
        where = ["" if run.keep is None else f"{run.keep:g}", run.variant] if sweep else []
        if run.option == "full" and sweep:
            where = ["", ""]
        cells = [
            *where,
            run.option,
            "" if run.seed is None else str(run.seed),
            run.status,
            f"{run.params:,}" if run.status == "ok" else "",
            f"{run.macs:,}" if run.status == "ok" else "",
            *scores,
            f"`{run.path}`" if run.path else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(folder: Path, result: CompareResult, split: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = folder / f"score_vs_params_{split}.png"
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for option in ("full", "A", "B", "C"):
        runs = result.ok_runs(option)
        if runs:
            ax.scatter(
                [r.params for r in runs],
                [r.scores[split] for r in runs],
                label=LABELS[option],
                c=COLOURS[option],
                marker=MARKERS[option],
                s=70 if option == "full" else 36,
                alpha=0.85,
            )
    ax.set_xscale("log")
    ax.set_xlabel("params (the block's own; the full model's trainable parameters)")
    ax.set_ylabel(f"{result.metric} on {split}")
    verdict = next((v for v in result.verdicts if v.split == split), None)
    title = f"{result.task}: {split}"
    if verdict is not None:
        title += f" — weak: {verdict.weak}, strong: {verdict.strong}"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
