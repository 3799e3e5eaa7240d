"""The size curve's part of the compare report: score against size per split (every run a
point, each option's mean with its 95% interval, the chance line), the crossover sizes, the
per-layer kept shares of each scope, and the validation guard's effect and gaps."""

from __future__ import annotations

from pathlib import Path

from legoc.experiment import curve as curves
from legoc.experiment.result import OPTIONS, PLAIN, CompareResult

AXES = {"params": "params (the block's own)", "macs": "MACs per example"}
COLOURS = {"A": "#1f77b4", "B": "#d62728", "C": "#2ca02c", "full": "#555555"}
VARIANT_COLOURS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
MARKERS = {"A": "o", "B": "s", "C": "^"}


def is_sweep(result: CompareResult) -> bool:
    return len(result.levels) > 1 or len(result.variants) > 1


def payload(result: CompareResult) -> dict:
    """The curve's numbers for report.json."""
    splits = result.splits
    others = [v for v in result.variants if v != PLAIN]
    return {
        "size_axis": result.size_axis,
        "chance": result.chance,
        "curves": {
            split: [
                p.to_dict()
                for v in result.variants
                for o in OPTIONS
                for p in curves.curve(result, split, o, v)
            ]
            for split in splits
        },
        "crossovers": [
            c
            for split in splits
            for than in ("A", "C")
            if (c := curves.crossover(result, split, than)) is not None
        ],
        "layers": {v: curves.layer_table(result, v) for v in result.variants},
        "guard": {s: curves.guard_effect(result, s) for s in splits} if "guard" in others else {},
        "gaps": curves.gap_table(result),
    }


def _size(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value < 1e6 else f"{value:.3g}"


def _crossover_text(c: dict) -> str:
    who = "B stops beating A" if c["than"] == "A" else "C overtakes B"
    share = c["share"]
    if c["kind"] == curves.NEVER:
        where = "never in the sizes tested: B stays ahead at every level"
    elif c["kind"] == curves.ABOVE:
        where = f"already at the largest size tested ({_size(c['size'])} {c['axis']})"
    else:
        where = f"at about {_size(c['size'])} {c['axis']}"
    interval = (
        f"95% interval {_size(c['low'])} to {_size(c['high'])} over the {share['crosses']:.0%} "
        "of replicates that cross"
        if c["low"] is not None
        else "no replicate crosses inside the sizes tested"
    )
    rest = f"above all sizes: {share['above']:.0%}, never: {share['never']:.0%} of replicates"
    return f"- **{c['split']}**: {who} {where} ({interval}; {rest})."


def markdown(result: CompareResult, plots: list[Path]) -> list[str]:
    """The curve's sections of report.md."""
    data = payload(result)
    axis = result.size_axis
    text = [
        "## Size curve",
        "",
        f"Keep levels {', '.join(f'{k:g}' for k in result.levels)}; each seed's searches form "
        "a chain, strictest level first, each starting from the rationale of the level before "
        "(so one seed's rationales are nested and the later searches share the earlier work). "
        f"Sizes are measured in **{axis}**"
        + (
            " (embedding tables hold most of the parameters, and a table's rows cost no "
            "multiply-adds)."
            if axis == "macs"
            else "."
        ),
        "",
    ]
    for split in result.splits:
        text += [f"### {split}", "", _curve_table(data["curves"][split], result), ""]
        if split in result.chance:
            text += [f"Chance (most frequent label): {result.chance[split]:.3f}.", ""]
    crossings = data["crossovers"]
    if crossings:
        text += ["### Crossovers (plain B)", ""]
        text += [_crossover_text(c) for c in crossings] + [""]
        text += [
            "A crossover is where the straight line (in log size) between two levels' mean "
            "differences meets 0; its interval comes from the same bootstrap on every "
            "replicate's curve.",
            "",
        ]
    scopes = [v for v in result.variants if v not in (PLAIN, "guard")]
    text += _layers_section(result, data, scopes)
    if data["guard"]:
        text += _guard_section(result, data)
    if data["gaps"]:
        text += _gaps_section(data["gaps"])
    text += _work_section(result)
    text += ["Curves: " + ", ".join(f"[{p.name}]({p.name})" for p in plots), ""]
    return text


def _work_section(result: CompareResult) -> list[str]:
    """What each level's searches cost: the chain makes the looser levels cheaper."""
    head = ["variant", "keep", "B runs", "search s (mean)", "evaluations (mean)", "started from"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in result.variants:
        for keep in result.levels:
            runs = result.ok_runs("B", keep, variant)
            if not runs:
                continue
            seconds = sum(r.details.get("search_seconds", 0.0) for r in runs) / len(runs)
            evaluations = sum(r.details.get("evaluations", 0) for r in runs) / len(runs)
            starts = {r.details.get("started_from_kept") for r in runs}
            start = "full model" if starts == {None} else "the stricter level's rationale"
            cells = [variant, f"{keep:g}", str(len(runs)), f"{seconds:.0f}", f"{evaluations:.0f}"]
            lines.append("| " + " | ".join([*cells, start]) + " |")
    return ["## Search work per level", "", "\n".join(lines), ""]


def _curve_table(points: list[dict], result: CompareResult) -> str:
    head = ["variant", "option", "keep", "runs", "params", "MACs", "score [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [
            p["variant"],
            p["option"],
            f"{p['keep']:g}",
            str(p["runs"]),
            _size(p["params"]),
            _size(p["macs"]),
            f"{p['score']:.3f} [{p['low']:.3f}, {p['high']:.3f}]",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _layers_section(result: CompareResult, data: dict, scopes: list[str]) -> list[str]:
    text = ["## Where in the network: kept share per layer (B, mean over seeds)", ""]
    if scopes:
        sets = result.settings.get("scope_sets", {})
        text += [
            "Scope sets: "
            + "; ".join(f"**{n}** = `{', '.join(sets.get(n, []))}`" for n in scopes)
            + ". A layer outside a set is kept whole.",
            "",
        ]
    score_split = next((s for s in result.splits if s != "search"), result.splits[0])
    for variant in [PLAIN, *scopes]:
        table = data["layers"].get(variant, [])
        if not table:
            continue
        layers = list(table[0]["shares"])
        head = ["keep", *layers, f"B on {score_split}"]
        lines = [f"**{variant}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        points = {p.keep: p for p in curves.curve(result, score_split, "B", variant)}
        for row in table:
            p = points.get(row["keep"])
            score = f"{p.score:.3f} [{p.low:.3f}, {p.high:.3f}]" if p else ""
            shares = [f"{row['shares'][layer]:.2f}" for layer in layers]
            lines.append("| " + " | ".join([f"{row['keep']:g}", *shares, score]) + " |")
        text += [*lines, ""]
    return text


def _guard_section(result: CompareResult, data: dict) -> list[str]:
    fraction = result.settings.get("validate")
    text = [
        "## Validation guard",
        "",
        f"`validate`: {fraction:g} of the search rows (seeded) held out; every variant searched "
        "(and C retrained) on the rest, A trained on all of `search` as always, and the "
        "guarded B accepted a candidate only if it was faithful on both parts. Positive "
        "differences favour the guard; at equal size, the plain B's curve is interpolated (in "
        "log size) at the guarded block's size.",
        "",
    ]
    head = ["split", "keep", "size plain → guard", "guard − plain, same keep [95% CI]", "answer"]
    head.append("guard − plain at equal size [95% CI]")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, entries in data["guard"].items():
        for e in entries:
            a = e["at_level"]
            eq = e["at_equal_size"]
            equal = (
                f"{eq['difference']:+.3f} [{eq['low']:+.3f}, {eq['high']:+.3f}]"
                if eq
                else "outside the plain curve"
            )
            lines.append(
                "| "
                + " | ".join(
                    [
                        split,
                        f"{e['keep']:g}",
                        f"{_size(e['size_plain'])} → {_size(e['size_guard'])}",
                        f"{a['difference']:+.3f} [{a['low']:+.3f}, {a['high']:+.3f}]",
                        a["answer"],
                        equal,
                    ]
                )
                + " |"
            )
    return [*text, "\n".join(lines), ""]


def _gaps_section(gaps: list[dict]) -> list[str]:
    head = ["variant", "keep", "runs", "mean gap", "largest gap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in gaps:
        cells = [g["variant"], f"{g['keep']:g}", str(g["runs"]), f"{g['gap']:+.4f}"]
        lines.append("| " + " | ".join([*cells, f"{g['max']:+.4f}"]) + " |")
    return [
        "## Over-fitting: faithfulness on search minus on validate (B's blocks)",
        "",
        "\n".join(lines),
        "",
    ]


def plots(folder: Path, result: CompareResult) -> list[Path]:
    """curve_<axis>_<split>.png for both size axes and every split."""
    return [_plot(folder, result, split, axis) for axis in AXES for split in result.splits]


def _plot(folder: Path, result: CompareResult, split: str, axis: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = folder / f"curve_{axis}_{split}.png"
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for run in result.ok_runs("full"):
        ax.scatter(
            [curves.size_of(run, axis)],
            [run.scores[split]],
            c=COLOURS["full"],
            marker="*",
            s=90,
            label="full model",
        )
    others = [v for v in result.variants if v != PLAIN]
    for option in OPTIONS:
        _draw(ax, result, split, axis, option, PLAIN, COLOURS[option], f"{option}")
    for i, variant in enumerate(others):
        colour = VARIANT_COLOURS[i % len(VARIANT_COLOURS)]
        for option in ("B", "C"):
            _draw(ax, result, split, axis, option, variant, colour, f"{option} [{variant}]")
    if split in result.chance:
        ax.axhline(result.chance[split], color="#999999", ls=":", lw=1, label="chance")
    for c in filter(None, (curves.crossover(result, split, t) for t in ("A", "C"))):
        if c["axis"] == axis and c["kind"] == curves.CROSSES:
            colour = COLOURS[c["than"]]
            ax.axvline(c["size"], color=colour, ls="--", lw=1)
            if c["low"] is not None:
                ax.axvspan(c["low"], c["high"], color=colour, alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel(f"{result.metric} on {split}")
    ax.set_title(
        f"{result.task}: {split} — score vs size (mean, 95% CI; dashed: crossovers)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw(ax, result, split, axis, option, variant, colour, label) -> None:
    runs = [r for k in result.levels for r in result.ok_runs(option, k, variant)]
    if not runs:
        return
    ax.scatter(
        [curves.size_of(r, axis) for r in runs],
        [r.scores[split] for r in runs],
        c=colour,
        marker=MARKERS[option],
        s=14,
        alpha=0.45,
    )
    points = curves.curve(result, split, option, variant)
    xs = [p.macs if axis == "macs" else p.params for p in points]
    ys = [p.score for p in points]
    err = [[p.score - p.low for p in points], [p.high - p.score for p in points]]
    style = "-" if variant == PLAIN else "--"
    ax.errorbar(
        xs,
        ys,
        yerr=err,
        color=colour,
        marker=MARKERS[option],
        ls=style,
        lw=1.2,
        ms=5,
        capsize=3,
        label=label,
    )
