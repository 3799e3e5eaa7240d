"""`legoc compare --ray`: each variant's seeds as Ray tasks give the report a local compare
gives (wall times and the folder aside), plain or swept over keep levels with the guard.
Skipped where Ray is not installed (`pip install 'legoc[ray]'`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from legoc.cli.app import app
from tests.helpers import write_task

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'legoc[ray]'")
runner = CliRunner()
# wall times, where the report was written (-o)
VARIES = {"seconds", "search_seconds", "output", "command"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VARIES}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.mark.parametrize(
    "sweep",
    [[], ["--seeds", "1", "--keep", "0.9,0.8", "--validate", "0.25"]],
    ids=["plain", "sweep"],
)
def test_compare_on_ray_writes_the_local_report(tmp_path, sweep):
    task = write_task(tmp_path / "task", "mlp", spec={"finetune": {"epochs": 2, "lr": 0.003}})
    reports = {}
    for name, extra in (("local", []), ("ray", ["--ray", "local"])):
        out = tmp_path / name
        args = ["compare", str(task["model"]), "--task", str(task["spec"]), "--arch", task["arch"]]
        args += ["-o", str(out), "--baseline-epochs", "2", "--seeds", "2", "--budget", "40"]
        result = runner.invoke(app, [*args, *sweep, *extra])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((out / "report.json").read_text())
    ray.shutdown()
    assert _stable(reports["ray"]) == _stable(reports["local"])
    assert [r["seed"] for r in reports["ray"]["runs"]] == [
        r["seed"] for r in reports["local"]["runs"]
    ]
