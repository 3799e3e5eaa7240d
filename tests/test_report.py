"""`--report DIR`: the Pareto front of a search trace, trace.json and pareto.png, and the CLI
flag (files written on success; one error line and exit 2 when the folder cannot be made)."""

from __future__ import annotations

import json
import os

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from legoc.cli import app
from legoc.report import pareto_front, plot_points, write_report

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def row(
    kept_params: int,
    faithfulness: float,
    evaluation: int = 0,
    keep: float = 0.9,
    stopped_early: bool = False,
) -> dict:
    """A trace row as SearchContext.evaluate writes it (a stopped-early row's faithfulness
    is the bound that proved it below keep)."""
    return {
        "evaluation": evaluation,
        "groups_removed": 0,
        "kept_params": kept_params,
        "faithfulness": faithfulness,
        "stopped_early": stopped_early,
        "accepted": faithfulness >= keep,
    }


def test_stopped_early_bounds_are_neither_plotted_nor_on_the_front():
    rows = [
        row(500, 1.00, 1),
        row(300, 0.95, 2),
        row(200, 0.85, 3),  # scored to the end, below keep
        row(3, 0.89, 4, stopped_early=True),  # an almost empty model: only a bound
        row(250, 0.80, 5, stopped_early=True),
    ]
    points = plot_points(rows)
    assert [r["evaluation"] for r in points["faithful"]] == [1, 2]
    assert [r["evaluation"] for r in points["below keep"]] == [3]
    assert [r["evaluation"] for r in pareto_front(rows)] == [3, 2, 1]


def non_dominated(rows: list[dict]) -> set[tuple]:
    """Brute force: the (size, faithfulness) points no other row beats or equals on both
    with at least one strictly better."""

    def beats(a, b):
        return (
            a["kept_params"] <= b["kept_params"]
            and a["faithfulness"] >= b["faithfulness"]
            and (a["kept_params"], a["faithfulness"]) != (b["kept_params"], b["faithfulness"])
        )

    return {
        (r["kept_params"], r["faithfulness"]) for r in rows if not any(beats(o, r) for o in rows)
    }


def test_the_front_is_the_non_dominated_rows_by_size():
    rows = [
        row(500, 1.00, 1),
        row(80, 0.50, 2),  # smallest, least faithful: on the front
        row(300, 0.97, 3),
        row(300, 0.95, 4),  # same size, less faithful: dominated by 3
        row(200, 0.93, 5),
        row(250, 0.93, 6),  # same faithfulness, larger: dominated by 5
        row(400, 0.96, 7),  # larger and less faithful than 3: dominated
        row(120, 0.80, 8),
    ]
    front = pareto_front(rows)
    assert [r["evaluation"] for r in front] == [2, 8, 5, 3, 1]
    assert [r["kept_params"] for r in front] == sorted(r["kept_params"] for r in front)


def test_the_front_of_nothing_is_empty():
    assert pareto_front([]) == []


@given(
    st.lists(
        st.tuples(st.integers(1, 30), st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9, 1.0])),
        max_size=25,
    )
)
def test_the_front_matches_a_brute_force_one(points):
    rows = [row(size, faith, i) for i, (size, faith) in enumerate(points)]
    front = pareto_front(rows)
    assert {(r["kept_params"], r["faithfulness"]) for r in front} == non_dominated(rows)
    assert len(front) == len(non_dominated(rows))  # one row per point, even if repeated
    sizes = [r["kept_params"] for r in front]
    assert sizes == sorted(sizes)
    assert all(any(r is o for o in rows) for r in front)  # rows as given, not copies


def test_write_report_writes_the_trace_and_a_plot(tmp_path):
    rows = [row(500, 1.0, 1), row(80, 0.5, 2), row(300, 0.97, 3), row(400, 0.96, 4)]
    summary = {"task": "tiny", "method": "greedy", "params": {"source": 500, "block": 300}}
    folder = tmp_path / "deep" / "report"  # parents are created too
    paths = write_report(folder, summary, rows, 0.9)
    assert paths == [folder / "trace.json", folder / "pareto.png"]
    payload = json.loads((folder / "trace.json").read_text())
    assert set(payload) == {"summary", "keep", "candidates", "pareto"}
    assert payload["summary"] == summary
    assert payload["keep"] == 0.9
    assert payload["candidates"] == rows
    assert payload["pareto"] == pareto_front(rows)
    png = (folder / "pareto.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 1000


def test_write_report_into_an_existing_folder_overwrites(tmp_path):
    write_report(tmp_path, {}, [row(10, 1.0, 1)], 0.9)
    write_report(tmp_path, {}, [row(20, 0.95, 1), row(5, 0.2, 2)], 0.9)
    payload = json.loads((tmp_path / "trace.json").read_text())
    assert [r["kept_params"] for r in payload["candidates"]] == [20, 5]
    assert sorted(os.listdir(tmp_path)) == ["pareto.png", "trace.json"]


# -- the CLI flag ------------------------------------------------------------------------------
def extract(task: dict, *extra: str):
    out = task["folder"].parent / "out" / "block.onnx"
    out.parent.mkdir(exist_ok=True)
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "-o", str(out)]
    args += ["--arch", task["arch"], "--budget", "60"]
    return runner.invoke(app, [*args, *extra]), out


def test_extract_with_report_writes_trace_and_plot(mlp_task, tmp_path):
    folder = tmp_path / "report"
    result, out = extract(mlp_task, "--report", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert sorted(os.listdir(folder)) == ["pareto.png", "trace.json"]
    summary = json.loads(result.stdout)
    payload = json.loads((folder / "trace.json").read_text())
    assert payload["summary"] == summary
    assert payload["keep"] == 0.9  # the spec's
    candidates = payload["candidates"]
    assert 0 < len(candidates) <= summary["evaluations"] <= 60
    assert all(r["accepted"] == (r["faithfulness"] >= 0.9) for r in candidates)
    assert payload["pareto"] == pareto_front(candidates)
    assert (folder / "pareto.png").read_bytes().startswith(PNG)


def test_report_folder_that_cannot_be_made_is_one_line_exit_2(mlp_task, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "report"
    result, _ = extract(mlp_task, "--report", str(folder))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), f"unhandled: {result.exception!r}"
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --report "), result.stderr
    assert str(folder) in lines[0]
    assert not folder.exists() and blocker.read_text() == "not a folder"


def test_report_path_that_is_a_file_is_one_line_exit_2(mlp_task, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result, _ = extract(mlp_task, "--report", str(blocker))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --report "), result.stderr
    assert blocker.read_text() == "not a folder"


def test_an_unwritable_report_is_refused_before_anything_is_written(mlp_task, tmp_path):
    """Bad input is refused up front and writes nothing (DESIGN 3.4; tests/test_cli.py)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result, out = extract(mlp_task, "--report", str(blocker / "report"))
    assert result.exit_code == 2, result.output
    assert not out.exists()
