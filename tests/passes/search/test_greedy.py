"""`greedy`: the search pass decides which dependency groups go, within keep and budget."""

from __future__ import annotations

import pytest
import torch

from legoc.passes.search.greedy import GreedySearch
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import labelled_data
from tests.passes.helpers import run_search, tiny_ir

OUTPUTS = {"cnn": [0, 3], "mlp": None, "planted": None}


def search(kind: str, keep: float = 0.9, budget: int = 200, seed: int = 0):
    """Run greedy on the trained tiny model of `kind`; return (result, scorer, ir)."""
    ir = tiny_ir(kind, OUTPUTS[kind])
    data = labelled_data(kind, 256, 1, OUTPUTS[kind])
    scorer = Scorer(ir, Split("search", {"x": data["x"]}, data["y"]), METRICS["accuracy"])
    result = run_search(GreedySearch(), ir, scorer, keep, budget, seed)
    return result, scorer, ir


def test_every_planted_noise_unit_is_removed():
    result, _, _ = search("planted")
    assert not result.ir.kept["noise"].any()
    assert result.ir.kept["head"].all()  # frozen: reaches the output


@pytest.mark.parametrize("kind", ["planted", "mlp", "cnn"])
def test_result_is_faithful_within_budget_and_counted_by_the_scorer(kind):
    result, scorer, ir = search(kind)
    stats = result.stats
    assert stats["faithfulness"] >= 0.9
    # the reported faithfulness is the result's own, re-scored (without counting)
    assert scorer.faithfulness(result.ir.kept, count=False) == pytest.approx(
        stats["faithfulness"], abs=1e-12
    )
    assert stats["evaluations"] == scorer.evaluations <= 200
    assert stats["groups_removed"] == len(result.ir.removed_groups()) > 0
    assert stats["units_removed"] == sum(
        len(ir.groups[g].members) for g in result.ir.removed_groups()
    )
    assert set(result.ir.removed_groups()) <= set(ir.removable_groups())  # never a frozen one
    # the result carries the values its units were scored with
    assert result.ir.ablation.keys() == scorer.values.keys()
    for name, value in scorer.values.items():
        torch.testing.assert_close(result.ir.ablation[name], value, atol=0, rtol=0)
    assert ir.removed_groups() == []  # the input IR is left alone


@pytest.mark.parametrize("kind", ["planted", "mlp", "cnn"])
def test_finished_search_is_one_minimal(kind):
    result, scorer, ir = search(kind)
    assert result.stats["one_minimal"] == 1
    removed = result.ir.removed_groups()
    for group in ir.removable_groups():
        if group in removed:
            continue
        faith = scorer.faithfulness(ir.mask_for([*removed, group]), count=False)
        assert faith < 0.9, f"group {group} could still go (faithfulness {faith})"


def test_the_same_seed_gives_the_same_kept_set():
    first, _, _ = search("cnn", seed=3)
    second, _, _ = search("cnn", seed=3)
    assert first.ir.kept_units() == second.ir.kept_units()
    assert first.stats["evaluations"] == second.stats["evaluations"]


@pytest.mark.parametrize("budget", [1, 2, 3])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_tiny_budget_still_returns_a_faithful_result(kind, budget):
    result, scorer, _ = search(kind, budget=budget)
    assert result.stats["evaluations"] == scorer.evaluations <= budget
    assert scorer.faithfulness(result.ir.kept, count=False) >= 0.9
    assert result.stats["faithfulness"] >= 0.9
    assert result.stats["one_minimal"] == 0


def test_keep_above_one_is_reported_as_not_met():
    result, scorer, _ = search("mlp", keep=1.5, budget=50)
    assert result.stats["faithfulness"] < 1.5
    assert result.stats["evaluations"] == scorer.evaluations <= 50
    assert result.stats["groups_removed"] == 0  # nothing can reach 1.5


def test_the_trace_records_every_counted_candidate():
    result, scorer, _ = search("mlp")
    rows = result.trace
    assert all(row["accepted"] == (row["faithfulness"] >= 0.9) for row in rows)
    assert [row["evaluation"] for row in rows] == sorted(row["evaluation"] for row in rows)
    assert len(rows) == scorer.evaluations
