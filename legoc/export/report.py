"""`--report DIR`: the search trace as JSON and a Pareto plot of faithfulness vs. size."""

from __future__ import annotations

import json
from pathlib import Path

from legoc.errors import LegocError


def exact(rows: list[dict]) -> list[dict]:
    """Candidates scored to the end. A candidate that stopped early (`stopped_early`: it could
    no longer reach keep) carries a bound on its faithfulness, not a score."""
    return [r for r in rows if not r.get("stopped_early", False)]


def plot_points(trace: list[dict]) -> dict[str, list[dict]]:
    """What pareto.png draws, by legend label: exact scores only, faithful or below keep."""
    scored = exact(trace)
    return {
        "below keep": [r for r in scored if not r["accepted"]],
        "faithful": [r for r in scored if r["accepted"]],
    }


def pareto_front(rows: list[dict]) -> list[dict]:
    """Exactly scored candidates no other beats on both size (smaller) and faithfulness
    (higher)."""
    front, best = [], float("-inf")
    for row in sorted(exact(rows), key=lambda r: (r["kept_params"], -r["faithfulness"])):
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
    points = plot_points(trace)
    colours = {"below keep": "#bbbbbb", "faithful": "#1f77b4"}
    for label, rows in points.items():
        if rows:
            ax.scatter(
                [r["kept_params"] for r in rows],
                [r["faithfulness"] for r in rows],
                s=9,
                c=colours[label],
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
    plotted = [r["faithfulness"] for rows in points.values() for r in rows]
    ax.set_ylim(max(0.0, min([*plotted, keep]) - 0.05), 1.05)
    bounds = len(trace) - len(plotted)
    stopped = f"; {bounds} stopped early below keep, not drawn" if bounds else ""
    ax.set_title(
        f"{summary.get('task', '')}: {len(trace)} candidates "
        f"({summary.get('method', '')}{stopped})",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
