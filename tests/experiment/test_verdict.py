"""The A/B/C verdict on constructed numbers: ties, clear gaps, noise, margins, one seed."""

from __future__ import annotations

import numpy as np
import pytest

from legoc.experiment.verdict import (
    NO,
    NOT_SIGNIFICANT,
    YES,
    compare_options,
    mean_std,
    strong_case,
)


def correct(rate: float, rows: int = 300, seed: int = 0) -> np.ndarray:
    """Per-row 0/1 accuracy with the given rate (exactly, in a seeded order)."""
    hits = np.zeros(rows)
    hits[: round(rate * rows)] = 1.0
    return np.random.default_rng(seed).permutation(hits)


def runs(*rates: float, rows: int = 300) -> np.ndarray:
    return np.stack([correct(r, rows, seed=i) for i, r in enumerate(rates)])


def test_identical_numbers_are_not_significant():
    same = runs(0.9, 0.92, 0.88)
    result = compare_options("B", "A", same, same.copy())
    assert result.answer == NOT_SIGNIFICANT
    assert result.difference == 0.0


def test_identical_constant_runs_give_a_zero_interval_not_a_yes():
    same = np.tile(correct(0.9), (3, 1))  # every seed equal: nothing but float noise to find
    result = compare_options("B", "A", same, same.copy())
    assert result.answer == NOT_SIGNIFICANT
    assert abs(result.low) < 1e-12 and abs(result.high) < 1e-12


def test_a_tie_is_yes_under_a_non_inferiority_margin():
    constant = np.tile(correct(0.9), (3, 1))
    assert compare_options("B", "A", constant, constant.copy(), margin=0.01).answer == YES
    noisy = runs(0.9, 0.92, 0.88)  # seed spread +-0.02: the interval is wider than 0.01
    assert compare_options("B", "A", noisy, noisy.copy(), margin=0.01).answer == NOT_SIGNIFICANT
    assert compare_options("B", "A", noisy, noisy.copy(), margin=0.06).answer == YES


def test_clear_gap_with_noise_is_yes_and_its_mirror_is_no():
    better, worse = runs(0.95, 0.96, 0.94), runs(0.70, 0.72, 0.69)
    up = compare_options("B", "A", better, worse)
    assert up.answer == YES and up.low > 0 and up.difference == pytest.approx(0.98 / 4, abs=0.01)
    down = compare_options("B", "A", worse, better)
    assert down.answer == NO and down.high < 0


def test_seed_noise_larger_than_the_gap_is_not_significant():
    b, a = runs(0.95, 0.70, 0.85), runs(0.80, 0.90, 0.75)
    assert compare_options("B", "A", b, a).answer == NOT_SIGNIFICANT


def test_lower_is_better_metrics_are_flipped():
    low_error, high_error = np.full((3, 50), 0.1), np.full((3, 50), 0.5)
    low_error += np.random.default_rng(1).normal(0, 0.01, low_error.shape)
    result = compare_options("B", "A", low_error, high_error, higher_is_better=False)
    assert result.answer == YES and result.difference > 0


def test_one_seed_falls_back_to_rows_and_says_so():
    b, a = correct(0.95)[None], correct(0.75, seed=5)[None]
    result = compare_options("B", "A", b, a)
    assert result.answer == YES
    assert "rows only" in result.method and "one seed" in result.method


def test_more_seeds_say_seeds_and_rows():
    result = compare_options("B", "A", runs(0.9, 0.91), runs(0.8, 0.81))
    assert "seeds" in result.method and "rows" in result.method and "only" not in result.method


def test_small_row_gap_on_few_rows_is_not_significant():
    b, a = correct(0.9, rows=20)[None], correct(0.85, rows=20, seed=3)[None]
    assert compare_options("B", "A", b, a).answer == NOT_SIGNIFICANT


def test_the_interval_is_deterministic():
    b, a = runs(0.9, 0.8, 0.85), runs(0.82, 0.86, 0.8)
    assert compare_options("B", "A", b, a) == compare_options("B", "A", b, a)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="different rows"):
        compare_options("B", "A", np.ones((2, 10)), np.ones((2, 11)))


@pytest.mark.parametrize(
    "weak, versus_c, strong",
    [
        (YES, YES, YES),
        (YES, NOT_SIGNIFICANT, NOT_SIGNIFICANT),
        (YES, NO, NO),
        (NOT_SIGNIFICANT, NOT_SIGNIFICANT, NOT_SIGNIFICANT),
        (NO, YES, NO),
    ],
)
def test_strong_case_needs_both(weak, versus_c, strong):
    def made(answer):
        return compare_options("B", "A", np.ones((1, 2)), np.ones((1, 2))).__class__(
            "B", "X", 0.0, 0.0, 0.0, 0.0, answer, "constructed"
        )

    assert strong_case(made(weak), made(versus_c)) == strong


def test_mean_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
