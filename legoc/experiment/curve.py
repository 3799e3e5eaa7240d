"""The size curve in numbers: each option's score and size per keep level with 95% intervals,
the size at which B stops beating A (and at which C overtakes B), and what the validation guard
changes at equal size. Pure numpy over a `CompareResult`: testable on constructed runs.

Intervals use the comparisons' bootstrap (legoc.experiment.verdict): seeds resampled within an
option and level (rescaled), rows resampled once per replicate and shared by every option and
level (all runs are scored on the same rows). A crossover is found on each replicate's curve
of differences, so its interval carries the scores' and the sizes' uncertainty; replicates
whose curve does not cross inside the sizes tested are counted, not dropped silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from legoc.experiment.result import PLAIN, CompareResult, Run
from legoc.experiment.verdict import CONFIDENCE, compare_options, replicate_means, row_weights

REPLICATES = 2000
CROSSES, ABOVE, NEVER = "crosses", "above", "never"  # where a difference curve meets 0


@dataclass(frozen=True)
class Point:
    """One option at one keep level: mean size and mean score with its interval."""

    option: str
    variant: str
    keep: float
    runs: int
    params: float
    macs: float
    score: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def size_of(run: Run, axis: str) -> float:
    return float(run.macs if axis == "macs" else run.params)


def curve(result: CompareResult, split: str, option: str, variant: str = PLAIN) -> list[Point]:
    """Per keep level (strictest first) with a run: mean params, MACs and score, 95% interval."""
    points = []
    for keep in result.levels:
        runs = result.ok_runs(option, keep, variant)
        if not runs:
            continue
        rows = np.stack([r.rows[split] for r in runs])
        rng = np.random.default_rng(0)
        means = replicate_means(rows, row_weights(rows.shape[1], REPLICATES, rng), rng)
        low, high = _interval(means)
        points.append(
            Point(
                option,
                variant,
                keep,
                len(runs),
                float(np.mean([r.params for r in runs])),
                float(np.mean([r.macs for r in runs])),
                float(rows.mean()),
                low,
                high,
            )
        )
    return points


def crossing(sizes: np.ndarray, differences: np.ndarray) -> tuple[str, float | None]:
    """Where B's advantage (difference > 0) ends, walking from the largest size down: ABOVE
    when it is not positive even at the largest size; NEVER when it stays positive at every
    size; else CROSSES at the size where the straight line (in log size) between the last
    positive and the first non-positive level meets 0."""
    order = np.argsort(-sizes, kind="stable")
    s, d = np.log(sizes[order]), differences[order]
    if d[0] <= 0:
        return ABOVE, float(sizes[order[0]])
    for i in range(1, len(d)):
        if d[i] <= 0:
            t = d[i - 1] / (d[i - 1] - d[i])
            return CROSSES, float(np.exp(s[i - 1] + t * (s[i] - s[i - 1])))
    return NEVER, None


def crossover(
    result: CompareResult, split: str, than: str, variant: str = PLAIN, replicates: int = REPLICATES
) -> dict | None:
    """The size (result.size_axis, of B's blocks) at which B stops scoring better than `than`,
    with a 95% interval over the replicates that cross; None with fewer than two levels."""
    levels = [
        k
        for k in result.levels
        if result.ok_runs("B", k, variant) and result.ok_runs(than, k, variant)
    ]
    if len(levels) < 2:
        return None
    sign = 1.0 if result.higher_is_better else -1.0
    rng = np.random.default_rng(0)
    b_rows = {k: np.stack([r.rows[split] for r in result.ok_runs("B", k, variant)]) for k in levels}
    x_rows = {
        k: np.stack([r.rows[split] for r in result.ok_runs(than, k, variant)]) for k in levels
    }
    weights = row_weights(next(iter(b_rows.values())).shape[1], replicates, rng)
    ones = np.ones((replicates, 1))
    diffs = np.empty((replicates, len(levels)))
    sizes = np.empty((replicates, len(levels)))
    for j, k in enumerate(levels):
        b_sizes = np.array(
            [[size_of(r, result.size_axis)] for r in result.ok_runs("B", k, variant)]
        )
        diffs[:, j] = sign * (
            replicate_means(b_rows[k], weights, rng) - replicate_means(x_rows[k], weights, rng)
        )
        sizes[:, j] = replicate_means(b_sizes, ones, rng)
    point_sizes = np.array(
        [
            np.mean([size_of(r, result.size_axis) for r in result.ok_runs("B", k, variant)])
            for k in levels
        ]
    )
    point_diffs = np.array([sign * (b_rows[k].mean() - x_rows[k].mean()) for k in levels])
    kind, estimate = crossing(point_sizes, point_diffs)
    found = [crossing(sizes[i], diffs[i]) for i in range(replicates)]
    crossed = np.array([size for k2, size in found if k2 == CROSSES])
    low, high = _interval(crossed) if crossed.size else (None, None)
    return {
        "split": split,
        "than": than,
        "variant": variant,
        "axis": result.size_axis,
        "kind": kind,
        "size": estimate,
        "low": low,
        "high": high,
        "share": {
            k2: sum(1 for k3, _ in found if k3 == k2) / replicates for k2 in (CROSSES, ABOVE, NEVER)
        },
    }


def guard_effect(result: CompareResult, split: str, guard: str = "guard") -> list[dict]:
    """Per level: the guarded B against the plain B at the same keep (difference with its
    interval and verdict, and their sizes), and at equal size: the guarded B's score minus
    the plain curve's, interpolated (in log size) at the guarded block's size. Positive
    favours the guard."""
    out = []
    plain = [k for k in result.levels if result.ok_runs("B", k, PLAIN)]
    sign = 1.0 if result.higher_is_better else -1.0
    for keep in result.levels:
        guarded, same = result.ok_runs("B", keep, guard), result.ok_runs("B", keep, PLAIN)
        if not guarded or not same:
            continue
        rows_g = np.stack([r.rows[split] for r in guarded])
        rows_p = np.stack([r.rows[split] for r in same])
        at_level = compare_options("guard", "plain", rows_g, rows_p, result.higher_is_better)
        entry = {
            "keep": keep,
            "split": split,
            "size_guard": float(np.mean([size_of(r, result.size_axis) for r in guarded])),
            "size_plain": float(np.mean([size_of(r, result.size_axis) for r in same])),
            "at_level": at_level.to_dict(),
            "at_equal_size": _at_equal_size(result, split, guarded, plain, sign),
        }
        out.append(entry)
    return out


def _at_equal_size(
    result, split, guarded: list[Run], plain: list[float], sign: float
) -> dict | None:
    if len(plain) < 2:
        return None
    axis = result.size_axis
    rng = np.random.default_rng(0)
    rows_g = np.stack([r.rows[split] for r in guarded])
    weights = row_weights(rows_g.shape[1], REPLICATES, rng)
    ones = np.ones((REPLICATES, 1))
    g_size = np.array([[size_of(r, axis)] for r in guarded])
    g_mean = replicate_means(rows_g, weights, rng)
    g_sizes = replicate_means(g_size, ones, rng)
    curve_scores, curve_sizes = [], []
    for k in plain:
        runs = result.ok_runs("B", k, PLAIN)
        curve_scores.append(replicate_means(np.stack([r.rows[split] for r in runs]), weights, rng))
        curve_sizes.append(replicate_means(np.array([[size_of(r, axis)] for r in runs]), ones, rng))
    scores, sizes = np.stack(curve_scores, 1), np.stack(curve_sizes, 1)

    def difference(i: int | None) -> float | None:
        at = g_size.mean() if i is None else g_sizes[i]
        s = sizes.mean(0) if i is None else sizes[i]
        c = np.array([np.mean(x) for x in curve_scores]) if i is None else scores[i]
        if not s.min() <= at <= s.max():
            return None
        order = np.argsort(s)
        interpolated = np.interp(np.log(at), np.log(s[order]), c[order])
        mine = rows_g.mean() if i is None else g_mean[i]
        return float(sign * (mine - interpolated))

    estimate = difference(None)
    if estimate is None:
        return None
    values = np.array([v for v in (difference(i) for i in range(REPLICATES)) if v is not None])
    low, high = _interval(values)
    return {"difference": estimate, "low": low, "high": high, "replicates": int(values.size)}


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def layer_table(result: CompareResult, variant: str, option: str = "B") -> list[dict]:
    """Per keep level: the mean per-layer kept share of `option`'s blocks of `variant`."""
    rows = []
    for keep in result.levels:
        runs = result.ok_runs(option, keep, variant)
        shares = [r.details.get("kept_share", {}) for r in runs]
        if not shares:
            continue
        layers = list(shares[0])
        rows.append(
            {
                "keep": keep,
                "runs": len(runs),
                "shares": {
                    layer: float(np.mean([s.get(layer, np.nan) for s in shares]))
                    for layer in layers
                },
            }
        )
    return rows


def gap_table(result: CompareResult) -> list[dict]:
    """Per variant and level: the mean search-vs-validate faithfulness gap of B's blocks."""
    rows = []
    for variant in result.variants:
        for keep in result.levels:
            gaps = [
                r.details["overfit_gap"]
                for r in result.ok_runs("B", keep, variant)
                if "overfit_gap" in r.details
            ]
            if gaps:
                rows.append(
                    {
                        "variant": variant,
                        "keep": keep,
                        "runs": len(gaps),
                        "gap": float(np.mean(gaps)),
                        "max": float(np.max(gaps)),
                    }
                )
    return rows
