"""`legoc compare --keep ... --scope-sets ... --validate ...` end to end on a tiny MLP: the
sweep's bookkeeping (one preparation, nested searches, A matched to B per level), the scope
and guard variants, the gaps in every B block, and the spec/CLI refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from legoc import api
from legoc.cli.app import app
from legoc.experiment.sweep import layer_of, layer_shares
from legoc.runtime.block import Block
from tests.experiment.test_compare import compare_args
from tests.helpers import assert_one_error_line, write_task

runner = CliRunner()
LEVELS = (0.95, 0.8)


def _args(task, out, *extra):
    return compare_args(task, out, "--finetune-epochs", "1", "--seeds", "1", *extra)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    task = write_task(root / "task", "mlp")
    out = root / "report"
    prepared = []
    original = api.prepare

    def counting(*args, **kwargs):
        prepared.append(1)
        return original(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(api, "prepare", counting)
    extra = ("--keep", "0.8,0.95", "--scope-sets", "first=fc1", "--validate", "0.25")
    try:
        result = runner.invoke(app, _args(task, out, *extra))
    finally:
        mp.undo()
    report = json.loads((out / "report.json").read_text()) if out.is_dir() else {}
    return out, result, report, len(prepared)


def _runs(report, option, variant="plain"):
    return {
        r["keep"]: r
        for r in report["runs"]
        if r["option"] == option and r["variant"] == variant and r["status"] == "ok"
    }


def test_the_sweep_prepares_once_and_writes_every_cell(sweep):
    out, result, report, prepared = sweep
    assert result.exit_code == 0, result.output
    assert prepared == 1
    assert report["settings"]["keep_levels"] == list(LEVELS)
    names = {p.name for p in (out / "runs").iterdir()}
    expected = {f"{o}-keep{k:g}-seed0.onnx" for o in "ABC" for k in LEVELS}
    expected |= {f"{o}-first-keep{k:g}-seed0.onnx" for o in "BC" for k in LEVELS}
    expected |= {f"B-guard-keep{k:g}-seed0.onnx" for k in LEVELS}
    assert names == expected | {"full.onnx"}
    plots = {p.name for p in out.iterdir() if p.suffix == ".png"}
    assert plots == {f"curve_{a}_{s}.png" for a in ("params", "macs") for s in ("search", "iid")}
    assert "--keep 0.8,0.95" in report["command"] and "--validate 0.25" in report["command"]


def test_a_is_matched_to_b_at_every_level(sweep):
    out, _, report, _ = sweep
    b, a = _runs(report, "B"), _runs(report, "A")
    assert set(b) == set(a) == set(LEVELS)
    for keep in LEVELS:
        assert a[keep]["details"]["target_params"] == b[keep]["params"]
        assert Block.load(out / a[keep]["path"]).meta("legoc.compare")["like"] == b[keep]["path"]


def test_looser_levels_start_from_the_stricter_rationale(sweep):
    out, _, report, _ = sweep
    for variant in ("plain", "first", "guard"):
        b = _runs(report, "B", variant)
        strict, loose = (Block.load(out / b[k]["path"]).meta("legoc.rationale") for k in LEVELS)
        assert b[LEVELS[0]]["details"]["started_from_kept"] is None
        kept_strict = sum(len(units) for units in strict["kept"].values())
        assert b[LEVELS[1]]["details"]["started_from_kept"] == kept_strict
        for module, units in loose["kept"].items():  # nested: a looser rationale keeps less
            assert set(units) <= set(strict["kept"][module])
        assert b[LEVELS[1]]["params"] <= b[LEVELS[0]]["params"]
        searches = [Block.load(out / b[k]["path"]).meta("legoc.search") for k in LEVELS]
        assert [s["keep"] for s in searches] == list(LEVELS)


def test_a_scope_set_prunes_only_its_modules(sweep):
    out, _, report, _ = sweep
    for run in _runs(report, "B", "first").values():
        rationale = Block.load(out / run["path"]).meta("legoc.rationale")
        for module in ("fc2", "head"):  # outside the set: kept whole
            assert len(rationale["kept"][module]) == rationale["total"][module]
        shares = run["details"]["kept_share"]
        assert shares["fc2"] == 1.0 and shares["fc1"] == len(rationale["kept"]["fc1"]) / 8
    assert set(_runs(report, "C", "first")) == set(LEVELS) and not _runs(report, "A", "first")


def test_every_b_block_carries_its_search_vs_validate_gap(sweep):
    out, _, report, _ = sweep
    for variant in ("plain", "first", "guard"):
        for run in _runs(report, "B", variant).values():
            meta = Block.load(out / run["path"]).meta("legoc.compare")
            gap = meta["faithfulness_search"] - meta["faithfulness_validate"]
            assert meta["overfit_gap"] == pytest.approx(gap, abs=1e-12)
            assert run["details"]["overfit_gap"] == meta["overfit_gap"]
    for run in _runs(report, "B", "guard").values():  # the guard accepts only what holds on both
        assert (
            min(run["details"]["faithfulness_validate"], run["details"]["faithfulness"])
            >= (run["keep"])
        )


def test_the_report_has_curves_crossovers_layers_and_the_guard(sweep):
    out, _, report, _ = sweep
    data = report["sweep"]
    assert data["size_axis"] == "params" and set(data["chance"]) == {"search", "iid"}
    points = data["curves"]["iid"]
    assert {(p["variant"], p["option"]) for p in points} >= {("plain", o) for o in "ABC"}
    for p in points:
        assert p["low"] <= p["score"] <= p["high"]
    assert {c["than"] for c in data["crossovers"]} == {"A", "C"}
    assert set(data["guard"]) == {"search", "iid"} and data["gaps"]
    text = (out / "report.md").read_text()
    for needle in ("## Size curve", "Crossovers", "kept share per layer", "Validation guard"):
        assert needle in text, needle
    assert len({v["keep"] for v in report["verdicts"]}) == len(LEVELS)


def test_layers_group_modules_by_their_first_numeric_part():
    assert layer_of("encoder.layer.3.attention.self") == "encoder.layer.3"
    assert layer_of("features.0") == "features.0" and layer_of("head") == "head"
    kept = {"a.0.x": np.array([1, 0, 0, 0], bool), "a.0.y": np.array([1, 1], bool)}
    shares = layer_shares(kept, {"a.0.x": 4, "a.0.y": 2, "b": 3})
    assert shares == {"a.0": 0.5, "b": 1.0}


@pytest.mark.parametrize(
    "extra, needles",
    [
        (("--keep", "0.8,x"), ("--keep", "comma-separated")),
        (("--keep", "0.8,1.5"), ("--keep", "(0, 1]")),
        (("--keep", "0.8,0.8"), ("--keep", "distinct")),
        (("--scope-sets", "early"), ("--scope-sets", "no '='")),
        (("--scope-sets", "a=fc1;a=fc2"), ("--scope-sets", "named twice")),
        (("--scope-sets", "a=nothing*"), ("--scope-sets", "matches no prunable module")),
        (("--validate", "1.5"), ("--validate", "(0, 1)")),
    ],
)
def test_bad_sweep_options_are_one_line_and_leave_nothing(tmp_path, extra, needles):
    task = write_task(tmp_path / "task", "mlp")
    result = runner.invoke(app, _args(task, tmp_path / "report", *extra))
    assert_one_error_line(result, needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]
