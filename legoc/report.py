"""`--report DIR`: the search trace as JSON and a Pareto plot of faithfulness vs. size."""

from __future__ import annotations

import json
from pathlib import Path

from legoc.errors import LegocError


def pareto_front(rows: list[dict]) -> list[dict]:
    """Candidates no other candidate beats on both size (smaller) and faithfulness (higher)."""
    front, best = [], float("-inf")
    for row in sorted(rows, key=lambda r: (r["kept_params"], -r["faithfulness"])):
        if row["faithfulness"] > best:
            front.append(row)
            best = row["faithfulness"]
    return front


def prepare_report_dir(directory: Path) -> Path:
    """Create the report folder up front, so a bad path fails before any search."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LegocError(f"--report {directory}: cannot create it ({exc.strerror})") from None
    return directory


def write_report(directory: Path, summary: dict, trace: list[dict], keep: float) -> list[Path]:
    """Write trace.json and pareto.png into `directory` (created if missing)."""
    directory = prepare_report_dir(directory)
    trace_path = directory / "trace.json"
    payload = {"summary": summary, "keep": keep, "candidates": trace, "pareto": pareto_front(trace)}
    trace_path.write_text(json.dumps(payload, indent=1, sort_keys=True))
    plot_path = directory / "pareto.png"
    _plot(plot_path, trace, keep, summary)
    return [trace_path, plot_path]


def _plot(path: Path, trace: list[dict], keep: float, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    accepted = [r for r in trace if r["accepted"]]
    rejected = [r for r in trace if not r["accepted"]]
    for rows, colour, label in (
        (rejected, "#bbbbbb", "below keep"),
        (accepted, "#1f77b4", "faithful"),
    ):
        if rows:
            ax.scatter(
                [r["kept_params"] for r in rows],
                [r["faithfulness"] for r in rows],
                s=9,
                c=colour,
                label=label,
                alpha=0.7,
                linewidths=0,
            )
    front = pareto_front(trace)
    if front:
        ax.step(
            [r["kept_params"] for r in front],
            [r["faithfulness"] for r in front],
            where="post",
            color="#d62728",
            lw=1.2,
            label="Pareto front",
        )
    ax.axhline(keep, color="black", lw=0.8, ls="--", label=f"keep = {keep}")
    block = summary.get("params", {}).get("block")
    if block:
        ax.axvline(block, color="#2ca02c", lw=0.8, ls=":", label=f"block: {block:,} params")
    ax.set_xscale("log")
    ax.set_xlabel("kept parameters (estimate per candidate)")
    ax.set_ylabel("faithfulness on search")
    ax.set_ylim(max(0.0, min([r["faithfulness"] for r in trace] + [keep]) - 0.05), 1.05)
    ax.set_title(
        f"{summary.get('task', '')}: {len(trace)} candidates ({summary.get('method', '')})"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
