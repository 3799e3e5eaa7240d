"""Is B at least as good as A (and C)? A confidence interval decides, and may say "no" or "not
significant" as plainly as "yes".

Each option has several runs (seeds); each run has a score per row of a split (the task metric
of that row). The quantity compared is the difference of the options' mean scores, oriented so
that positive means B is better (lower-is-better metrics are flipped). Its 95% interval comes
from a two-level bootstrap: seeds are resampled within each option (their deviations from the
option's mean widened by sqrt(n/(n-1)), so a few seeds do not look more alike than they are),
and rows are resampled once per replicate and shared by every option (every run is scored on the
same rows, so the comparison is paired over rows). With one seed, only rows are resampled: the
interval then ignores seed-to-seed spread, and the method says so.

Pure numpy: unit-testable on constructed numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

YES, NO, NOT_SIGNIFICANT = "yes", "no", "not significant"
REPLICATES = 4000
CONFIDENCE = 0.95
_CHUNK = 500  # replicates per vectorised step (memory: chunk x rows floats)


@dataclass(frozen=True)
class Comparison:
    """`better` vs `than` on one split: oriented difference of means with its interval."""

    better: str
    than: str
    difference: float  # > 0: `better` scores better
    low: float
    high: float
    margin: float
    answer: str  # yes | no | not significant
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def describe_method(seeds: dict[str, int]) -> str:
    """The interval's method in words, for the report."""
    one = sorted(name for name, n in seeds.items() if n < 2)
    if one:
        return (
            f"paired bootstrap over rows only for {', '.join(one)} (one seed: the spread between "
            "seeds is unknown and not in the interval)"
        )
    return "bootstrap over seeds (rescaled) and rows (paired), percentile interval"


def compare_options(
    better: str,
    than: str,
    rows_better: np.ndarray,
    rows_than: np.ndarray,
    higher_is_better: bool = True,
    margin: float = 0.0,
    replicates: int = REPLICATES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    """Decide "`better` >= `than` - margin" from per-row scores, shaped (runs, rows) each.

    yes: the whole interval lies above -margin; no: the whole interval lies below -margin;
    not significant: otherwise. Identical inputs give an interval of exactly 0: "not
    significant" without a margin, "yes" with one.
    """
    b, a = _as_runs(rows_better), _as_runs(rows_than)
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"options scored on different rows: {b.shape[1]} vs {a.shape[1]}")
    sign = 1.0 if higher_is_better else -1.0
    difference = sign * (float(b.mean()) - float(a.mean()))
    stats = sign * _bootstrap(b, a, replicates, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.quantile(stats, [tail, 1.0 - tail]))
    # Float noise from resampling equal numbers must not turn a tie into a verdict.
    scale = max(1.0, float(np.abs(b).max(initial=0.0)), float(np.abs(a).max(initial=0.0)))
    tolerance = 1e-9 * scale
    if low > -margin + tolerance:
        answer = YES
    elif high < -margin - tolerance:
        answer = NO
    else:
        answer = NOT_SIGNIFICANT
    method = describe_method({better: b.shape[0], than: a.shape[0]})
    return Comparison(better, than, difference, low, high, margin, answer, method)


def strong_case(b_vs_a: Comparison, b_vs_c: Comparison) -> str:
    """B >= A and B >= C: yes only if both hold, no if either fails, else not significant.
    (An intersection-union test: each part at 95% keeps the joint "yes" at 95%.)"""
    answers = {b_vs_a.answer, b_vs_c.answer}
    if answers == {YES}:
        return YES
    if NO in answers:
        return NO
    return NOT_SIGNIFICANT


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def row_weights(n_rows: int, size: int, rng) -> np.ndarray:
    """(size, n_rows) bootstrap weights of rows (each replicate's resampled share of a row)."""
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=size) / n_rows


def replicate_means(runs: np.ndarray, weights: np.ndarray, rng) -> np.ndarray:
    """Per replicate, the mean of `runs` (runs, rows) over seeds resampled (rescaled, as the
    comparisons do) and rows weighted by `weights` (replicates, rows): a mean's bootstrap."""
    runs = _rescaled(_as_runs(runs))
    out = np.empty(weights.shape[0])
    for start in range(0, weights.shape[0], _CHUNK):
        chunk = weights[start : start + _CHUNK]
        out[start : start + len(chunk)] = (_seed_means(runs, len(chunk), rng) * chunk).sum(1)
    return out


def _as_runs(rows: np.ndarray) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected scores shaped (runs, rows), got {array.shape}")
    return array


def _rescaled(runs: np.ndarray) -> np.ndarray:
    """Widen each run's deviation from the option's mean so the seed bootstrap's variance of
    the mean is s^2/n rather than (n-1)/n * s^2/n."""
    n = runs.shape[0]
    if n < 2:
        return runs
    centre = runs.mean(axis=0, keepdims=True)
    return centre + np.sqrt(n / (n - 1)) * (runs - centre)


def _bootstrap(b: np.ndarray, a: np.ndarray, replicates: int, rng) -> np.ndarray:
    """mean(B*) - mean(A*) per replicate (not yet oriented)."""
    b, a = _rescaled(b), _rescaled(a)
    n_rows = b.shape[1]
    out = np.empty(replicates)
    for start in range(0, replicates, _CHUNK):
        size = min(_CHUNK, replicates - start)
        rows = row_weights(n_rows, size, rng)
        out[start : start + size] = (_seed_means(b, size, rng) * rows).sum(1) - (
            _seed_means(a, size, rng) * rows
        ).sum(1)
    return out


def _seed_means(runs: np.ndarray, size: int, rng) -> np.ndarray:
    """(size, rows): each replicate's mean over seeds resampled with replacement."""
    n = runs.shape[0]
    if n == 1:
        return np.broadcast_to(runs, (size, runs.shape[1]))
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size) / n
    return weights @ runs
