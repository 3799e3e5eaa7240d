"""Progress and budget mean what they say: phases by name, each reaching its end; plain status
lines on stderr off a terminal, none with --quiet; the budget bounds all the work (gradient
steps included) and says when it was too small; --time-limit stops with the best faithful
block found, or exit 1."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from legoc import api
from legoc.cli.app import app
from legoc.scoring.scorer import gradient_cost
from tests.helpers import assert_one_error_line, write_task

runner = CliRunner()
SPEC = {"search": {"method": "auto", "budget": 200, "seed": 0}}
STATUS = re.compile(
    r"legoc: (?P<phase>.+?)(?P<end> done(, (?P<done>\d+)/(?P<total>\d+)( \w+)?)?)?, \d+ s"
)


@pytest.fixture(scope="module")
def auto_task(tmp_path_factory):
    """The tiny MLP (128 search rows) searched by `auto` with a budget of 200."""
    return write_task(tmp_path_factory.mktemp("auto") / "task", "mlp", spec=SPEC)


def extract(task: dict, out: Path, *extra: str):
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "-o", str(out)]
    return runner.invoke(app, [*args, "--arch", task["arch"], *extra])


def ends(stderr: str) -> dict[str, tuple[int, int] | None]:
    """Each phase whose end was printed, in order, with its last (done, total) if counted."""
    out = {}
    for line in stderr.splitlines():
        match = STATUS.fullmatch(line)
        assert match, f"not a status line: {line!r}"
        if match["end"] and match["phase"] != "done":
            counts = (int(match["done"]), int(match["total"])) if match["done"] else None
            out[match["phase"]] = counts
    return out


def test_off_a_terminal_each_phase_prints_a_plain_line_and_a_final_line(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx")
    assert result.exit_code == 0, result.output
    phases = ends(result.stderr)
    assert list(phases) == ["capture", "analysis", "mask training", "search", "minimize", "export"]
    steps = int(0.5 * 200 / gradient_cost(64, 128))  # half the budget at 1.5 evaluations a step
    assert phases["mask training"] == (steps, steps)
    used, budget = phases["minimize"]
    assert budget == 200 and phases["search"][0] <= used <= budget  # budget used, cumulative
    assert re.fullmatch(r"legoc: done, \d+ s", result.stderr.splitlines()[-1])
    assert (tmp_path / "block.onnx").is_file()


def test_quiet_prints_no_progress(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert (tmp_path / "block.onnx").is_file()


def test_the_summary_counts_gradient_steps_against_the_budget(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx", "--json", "-q", "--budget", "60")
    summary = json.loads(result.stdout)
    spent = summary["budget"]
    steps = int(0.5 * 60 / gradient_cost(64, 128))
    assert spent["limit"] == 60 and spent["mask_steps"] == steps
    assert spent["gradient"] >= steps * gradient_cost(64, 128)
    assert spent["evaluations"] == summary["evaluations"]
    assert spent["used"] == pytest.approx(spent["evaluations"] + spent["gradient"])
    assert spent["used"] <= 60
    assert spent["time_limit"] is None


def test_a_budget_too_small_to_remove_anything_says_so(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx", "--budget", "1", "-q")
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "warning: the budget of 1 evaluations was too small for the search to remove anything"
    )
    assert "the block is the whole model; raise --budget" in line
    assert "budget 0/1 (stopped by the budget) | not proven 1-minimal" in result.stdout
    assert (tmp_path / "block.onnx").is_file()  # faithful, so written: but not silently


def test_a_time_limit_that_ends_before_anything_is_removed_is_exit_1(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx", "--time-limit", "0.001", "-q")
    assert_one_error_line(result, ("time limit (0.001 s) stopped the search",), 1)
    assert "nothing was written" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_time_limit_below_zero_is_a_usage_error(auto_task, tmp_path):
    result = extract(auto_task, tmp_path / "block.onnx", "--time-limit", "0", "-q")
    assert_one_error_line(result, ("--time-limit 0.0: must be > 0 seconds",), 2)


class Clock:
    """A stand-in for time.monotonic that the test moves forward."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_time_limit_stops_the_search_with_its_best_faithful_block(
    auto_task, tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    reports = []

    def progress(phase: str, done: int, total: int) -> None:
        reports.append((phase, done, total))
        if phase == "minimize":  # the learned cut is made; the sweep runs out of time
            clock.now += 60

    task = auto_task
    result = api.extract(
        task["model"],
        task["spec"],
        tmp_path / "block.onnx",
        arch=task["arch"],
        progress=progress,
        time_limit=30,
    )
    assert result.budget["stopped_by"] == "time-limit" and result.budget["time_limit"] == 30
    assert result.faithfulness >= result.keep and not result.one_minimal
    assert result.params_block < result.params_source
    assert (tmp_path / "block.onnx").is_file()
    assert reports[-1] == ("export", 1, 1)


def test_every_phase_reaches_its_end_and_the_search_ends_at_the_budget_used(auto_task, tmp_path):
    reports = []
    task = auto_task
    result = api.extract(
        task["model"],
        task["spec"],
        tmp_path / "block.onnx",
        arch=task["arch"],
        progress=lambda *report: reports.append(report),
    )
    last = {}
    for phase, done, total in reports:
        assert 0 <= done <= total, (phase, done, total)
        last[phase] = (done, total)
    assert set(last) == {"capture", "analysis", "mask training", "search", "minimize", "export"}
    assert all(done == total for done, total in last.values()), last
    assert next(total for phase, _, total in reports if phase == "search") == 200
    assert last["minimize"][0] == int(result.budget["used"])


def test_without_a_time_limit_the_same_seed_gives_the_same_block(auto_task, tmp_path):
    first = extract(auto_task, tmp_path / "a.onnx", "-q", "--budget", "60")
    second = extract(auto_task, tmp_path / "b.onnx", "-q", "--budget", "60")
    assert first.exit_code == second.exit_code == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
