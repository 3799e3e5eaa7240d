"""The size curve's numbers on constructed runs: means and intervals per level, crossovers
where the difference curve meets 0 (interpolated in log size), the guard at equal size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from legoc.experiment import curve
from legoc.experiment.result import PLAIN, CompareResult, Run

ROWS = 40
LEVELS = [0.99, 0.95, 0.9]
SIZES = {0.99: 1000, 0.95: 100, 0.9: 10}


def _run(option, keep, seed, score, size=None, variant=PLAIN, noise=0.0):
    rng = np.random.default_rng(seed * 7 + int(keep * 100))
    rows = np.full(ROWS, score) + noise * rng.standard_normal(ROWS)
    run = Run(option, seed, f"{option}.onnx", keep=keep, variant=variant)
    run.params = run.macs = size if size is not None else SIZES[keep]
    run.rows, run.scores = {"iid": rows}, {"iid": float(rows.mean())}
    return run


def _result(runs, variants=(PLAIN,)):
    return CompareResult(
        "t", "accuracy", True, ["iid"], [0, 1], {}, runs, [], "out", levels=LEVELS,
        variants=list(variants),
    )  # fmt: skip


def _curve_runs(b_scores, other="A", other_score=0.7, noise=0.0, seeds=(0, 1, 2)):
    runs = []
    for keep, b in zip(LEVELS, b_scores):
        for s in seeds:
            runs += [
                _run("B", keep, s, b, noise=noise),
                _run(other, keep, s, other_score, noise=noise),
            ]
    return runs


def test_crossing_interpolates_in_log_size():
    sizes = np.array([1000.0, 100.0, 10.0])
    kind, size = curve.crossing(sizes, np.array([0.2, 0.1, -0.1]))
    assert kind == curve.CROSSES and size == pytest.approx(math.sqrt(1000), rel=1e-12)
    assert curve.crossing(sizes[::-1], np.array([-0.1, 0.1, 0.2]))[1] == pytest.approx(
        math.sqrt(1000), rel=1e-12
    )  # the order levels come in does not matter
    assert curve.crossing(sizes, np.array([0.0, 0.1, 0.1])) == (curve.ABOVE, 1000.0)
    assert curve.crossing(sizes, np.array([0.3, 0.2, 0.1])) == (curve.NEVER, None)


def test_constant_runs_give_an_exact_crossover_and_a_zero_width_interval():
    result = _result(_curve_runs([0.9, 0.8, 0.6]))
    c = curve.crossover(result, "iid", "A")
    assert c["kind"] == curve.CROSSES and c["share"][curve.CROSSES] == 1.0
    for value in (c["size"], c["low"], c["high"]):
        assert value == pytest.approx(math.sqrt(1000), rel=1e-9)


def test_noisy_runs_give_an_interval_around_the_crossover():
    result = _result(_curve_runs([0.9, 0.8, 0.6], noise=0.05))
    c = curve.crossover(result, "iid", "A")
    assert c["kind"] == curve.CROSSES
    assert c["low"] < c["size"] < c["high"] and c["low"] > 10 and c["high"] < 100
    assert sum(c["share"].values()) == pytest.approx(1.0)


def test_c_overtaking_b_and_b_ahead_everywhere():
    result = _result(_curve_runs([0.9, 0.8, 0.6], other="C", other_score=0.75))
    assert curve.crossover(result, "iid", "C")["size"] == pytest.approx(
        math.exp(math.log(100) + 0.05 / 0.2 * (math.log(10) - math.log(100))), rel=1e-9
    )
    ahead = curve.crossover(_result(_curve_runs([0.9, 0.85, 0.8])), "iid", "A")
    assert ahead["kind"] == curve.NEVER and ahead["size"] is None and ahead["low"] is None


def test_a_lower_is_better_metric_flips_the_difference():
    result = _result(_curve_runs([0.1, 0.2, 0.4], other_score=0.3))
    result.higher_is_better = False  # B's loss grows past A's between 100 and 10
    c = curve.crossover(result, "iid", "A")
    assert c["kind"] == curve.CROSSES
    assert c["size"] == pytest.approx(
        math.exp(math.log(100) + 0.5 * (math.log(10) - math.log(100)))
    )


def test_curve_points_hold_mean_size_and_an_interval_per_level():
    runs = _curve_runs([0.9, 0.8, 0.6], noise=0.05)
    points = curve.curve(_result(runs), "iid", "B")
    assert [p.keep for p in points] == LEVELS and [p.params for p in points] == [1000, 100, 10]
    for p in points:
        scores = [r.scores["iid"] for r in runs if r.option == "B" and r.keep == p.keep]
        assert p.runs == 3 and p.score == pytest.approx(np.mean(scores), abs=1e-12)
        assert p.low < p.score < p.high
    assert curve.crossover(_result(runs[:2]), "iid", "A") is None  # one level: no curve


def test_the_guard_at_equal_size_reads_the_plain_curve_between_levels():
    runs = _curve_runs([0.9, 0.8, 0.6])
    runs += [_run("B", 0.9, s, 0.75, size=30, variant="guard") for s in (0, 1, 2)]
    (effect,) = curve.guard_effect(_result(runs, (PLAIN, "guard")), "iid")
    plain_at_30 = 0.8 + (0.6 - 0.8) * (math.log(30) - math.log(100)) / (
        math.log(10) - math.log(100)
    )
    equal = effect["at_equal_size"]
    assert equal["difference"] == pytest.approx(0.75 - plain_at_30, abs=1e-9)
    assert equal["low"] == pytest.approx(equal["difference"], abs=1e-9)  # constant rows
    assert effect["at_level"]["difference"] == pytest.approx(0.75 - 0.6, abs=1e-12)
    assert effect["size_guard"] == 30 and effect["size_plain"] == 10


def test_layer_and_gap_tables_average_over_seeds():
    runs = [_run("B", 0.9, s, 0.8) for s in (0, 1)]
    for run, share, gap in zip(runs, (0.2, 0.4), (0.01, 0.03)):
        run.details = {"kept_share": {"layer.0": share, "layer.1": 1.0}, "overfit_gap": gap}
    result = _result(runs)
    (row,) = curve.layer_table(result, PLAIN)
    assert row["shares"] == pytest.approx({"layer.0": 0.3, "layer.1": 1.0})
    (gap,) = curve.gap_table(result)
    assert gap["gap"] == pytest.approx(0.02) and gap["max"] == pytest.approx(0.03)
