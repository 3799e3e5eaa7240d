"""`legoc compare` end to end on a tiny task: A, B and C per seed, a report folder written in one
piece, verdicts per split; bad input gets one line, exit 2 and no folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from legoc.cli.app import app
from legoc.experiment.verdict import NO, NOT_SIGNIFICANT, YES
from legoc.runtime.block import Block
from tests.helpers import FACTORIES, error_lines, make_search_fall_short, write_task

runner = CliRunner()


def compare_args(task, out, *extra):
    return [
        "compare",
        str(task["model"]),
        "--task",
        str(task["spec"]),
        "--arch",
        task["arch"],
        "-o",
        str(out),
        "--baseline-epochs",
        "3",
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_compare(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    task = write_task(root / "task", "cnn", spec={"finetune": {"epochs": 2, "lr": 0.003}})
    out = root / "report"
    result = runner.invoke(app, compare_args(task, out, "--seeds", "2"))
    return task, out, result


def test_compare_writes_the_report_runs_and_plots(tiny_compare):
    _task, out, result = tiny_compare
    assert result.exit_code == 0, result.output
    assert "weak case" in result.stdout and "report.md" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "report.json",
        "report.md",
        "runs",
        "score_vs_params_iid.png",
        "score_vs_params_search.png",
    ]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"{o}-seed{s}.onnx" for o in "ABC" for s in (0, 1)] + ["full.onnx"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (out / "runs" / "full.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_report_json_holds_every_run_scored_on_every_split(tiny_compare):
    _task, out, _ = tiny_compare
    report = json.loads((out / "report.json").read_text())
    assert report["splits"] == ["search", "iid"] and report["seeds"] == [0, 1]
    by_option = {}
    for run in report["runs"]:
        by_option.setdefault(run["option"], []).append(run)
        assert run["status"] == "ok" and set(run["scores"]) == {"search", "iid"}
        assert run["params"] > 0 and run["macs"] > 0
        block = Block.load(out / run["path"])
        if run["option"] == "full":  # the source's trainable parameters, not its BN-folded file
            assert run["params"] == sum(p.numel() for p in FACTORIES["cnn"]().parameters())
        else:  # blocks are written unaligned: stored == params
            assert block.param_count() == block.rationale_params() == run["params"]
    assert {k: len(v) for k, v in by_option.items()} == {"full": 1, "A": 2, "B": 2, "C": 2}
    for a, b in zip(by_option["A"], by_option["B"]):  # matched size, per seed
        assert abs(a["params"] - b["params"]) <= 0.1 * b["params"]
        assert a["details"]["target_params"] == b["params"]
    for b, c in zip(by_option["B"], by_option["C"]):  # C retrains B: same structure
        assert b["params"] == c["params"] and c["details"]["data"] == "search"
    for verdict in report["verdicts"]:
        assert verdict["weak"] in (YES, NO, NOT_SIGNIFICANT)
        assert verdict["strong"] in (YES, NO, NOT_SIGNIFICANT)
        assert verdict["b_vs_a"]["low"] <= verdict["b_vs_a"]["difference"] + 1e-12
    table = {row["option"]: row for row in report["table"]}
    scores = [r["scores"]["iid"] for r in by_option["B"]]
    assert table["B"]["scores"]["iid"][0] == pytest.approx(np.mean(scores))
    assert report["command"].startswith("legoc compare ")


def test_report_md_states_table_verdicts_and_method(tiny_compare):
    _, out, _ = tiny_compare
    text = (out / "report.md").read_text()
    for needle in ("## Results", "## Verdicts", "weak case: B ≥ A", "bootstrap", "± ", "C: rat"):
        assert needle in text, needle


def test_b_metadata_names_its_option_and_seed(tiny_compare):
    _, out, _ = tiny_compare
    meta = Block.load(out / "runs" / "B-seed1.onnx").meta("legoc.compare")
    assert meta == {"option": "B", "seed": 1, "keep": 0.9, "variant": "plain"}
    assert Block.load(out / "runs" / "C-seed1.onnx").meta("legoc.training")["seed"] == 1
    assert Block.load(out / "runs" / "A-seed0.onnx").meta("legoc.baseline")["family"] == "cnn"


def test_a_non_empty_folder_is_refused_before_any_work(tmp_path):
    task = write_task(tmp_path / "task", "mlp")
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, compare_args(task, out, "--seeds", "1"))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "--force" in lines[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "task"]


def test_force_replaces_the_folder_and_one_seed_says_rows_only(tmp_path):
    task = write_task(tmp_path / "task", "mlp")
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"legoc_compare": 1}')  # an earlier report: replaceable
    (out / "old.txt").write_text("old")
    out.chmod(0o750)
    extra = ("--seeds", "1", "--force", "--finetune-epochs", "1")
    result = runner.invoke(app, compare_args(task, out, *extra))
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o750  # the replaced folder's mode, not mkdtemp's 0700
    assert not (out / "old.txt").exists() and (out / "report.md").is_file()
    assert "rows only" in (out / "report.md").read_text()
    # off a terminal: a status line as each phase ends (the same helper as extract's)
    status = result.stderr.splitlines()
    ended = [line.split(" done")[0] for line in status if " done" in line]
    assert ended[:2] == ["legoc: capture", "legoc: analysis"]
    runs = ["legoc: B seed 0: search", "legoc: C seed 0: retrain", "legoc: A seed 0: train"]
    assert {*runs, "legoc: runs"} <= set(ended), status
    assert status[-1].startswith("legoc: done, ")
    report = json.loads((out / "report.json").read_text())
    assert report["legoc_compare"] == 1  # what a later --force recognises
    assert report["settings"]["finetune"]["epochs"] == 1
    assert "--finetune-epochs 1" in report["command"] and "--baseline-epochs 3" in report["command"]
    (run_c,) = [r for r in report["runs"] if r["option"] == "C"]
    assert run_c["details"]["epochs"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "task"]


@pytest.mark.parametrize(
    "extra, needle",
    [(("--method", "nope"), "--method"), (("--family", "rnn"), "--family"), ((), "")],
)
def test_bad_input_leaves_nothing(tmp_path, extra, needle):
    task = write_task(tmp_path / "task", "mlp")
    if not extra:  # a spec error: one line naming the key
        task["spec"].write_text(task["spec"].read_text().replace("keep: 0.9", "keep: -1"))
        needle = "keep"
    out = tmp_path / "report"
    result = runner.invoke(app, compare_args(task, out, *extra))
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]


def test_no_seed_reaching_keep_is_exit_1_and_leaves_nothing(tmp_path, monkeypatch):
    task = write_task(tmp_path / "task", "mlp", spec={"search": {"budget": 20}})
    make_search_fall_short(monkeypatch)
    out = tmp_path / "report"
    result = runner.invoke(app, compare_args(task, out, "--seeds", "1"))
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and "reaches keep=0.9" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]
