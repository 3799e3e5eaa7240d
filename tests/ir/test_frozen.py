"""What froze, said: `inspect` names the op and node that froze a module's units, `extract`
reports the frozen share (warning above half) and refuses a model with no removable unit, and a
kl/mse gap too small to measure faithfulness by is an error naming both values."""

from __future__ import annotations

import json

import torch
import yaml
from torch import nn

from legoc.cli.app import app
from tests.cli.helpers import assert_refused, runner

ARCH = "tests.ir.test_frozen"


class OpaqueMiddle(nn.Module):
    """fc1's units pass through erf, which legoc does not slice through: nothing is removable."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(torch.erf(self.fc1(x)))


class MostlyFrozen(nn.Module):
    """16 units behind erf (frozen), 4 behind relu (removable): 80% of the units are frozen."""

    def __init__(self):
        super().__init__()
        self.wide, self.narrow = nn.Linear(6, 16), nn.Linear(6, 4)
        self.head = nn.Linear(20, 4)

    def forward(self, x):
        return self.head(torch.cat([torch.erf(self.wide(x)), torch.relu(self.narrow(x))], dim=1))


class BarelyUsed(nn.Module):
    """The only removable units reach the output scaled by 1e-9: emptied ≈ full."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(6, 8), nn.Linear(8, 4), nn.Linear(6, 4)

    def forward(self, x):
        return self.head(x) + 1e-9 * self.fc2(torch.relu(self.fc1(x)))


def make_opaque():
    return _seeded(OpaqueMiddle)


def make_mostly_frozen():
    return _seeded(MostlyFrozen)


def make_barely_used():
    return _seeded(BarelyUsed)


def _seeded(cls):
    torch.manual_seed(0)
    return cls()


def _task(folder, factory, metric="accuracy"):
    """The model's state dict, data labelled by the model itself, and a spec."""
    model = factory().eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save({"x": x, "y": model(x).argmax(-1)}, folder / "search.pt")
    spec = {
        "legoc": 1,
        "name": "frozen",
        "data": {"search": "search.pt"},
        "metric": metric,
        "keep": 0.9,
        "ablation": "mean",
        "search": {"method": "greedy", "budget": 60, "seed": 0},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "model.pt", folder / "spec.yaml"


def _extract(tmp_path, factory, *extra, metric="accuracy"):
    model, spec = _task(tmp_path / "task", factory, metric)
    out = tmp_path / "out" / "block.onnx"
    out.parent.mkdir()
    arch = f"{ARCH}:{factory.__name__}"
    args = ["extract", str(model), "--task", str(spec), "-o", str(out), "--arch", arch, *extra]
    return runner.invoke(app, args), out


def test_inspect_names_the_op_and_node_that_froze_a_module(tmp_path):
    model, _ = _task(tmp_path, make_opaque)
    args = ["inspect", str(model), "--arch", f"{ARCH}:make_opaque", "--input-shape", "x=6"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    line = next(row for row in result.stdout.splitlines() if row.startswith("  fc1:"))
    assert "frozen: read by erf, which legoc cannot slice through (by erf at node erf)" in line


def test_extract_refuses_a_model_with_no_removable_unit(tmp_path):
    result, out = _extract(tmp_path, make_opaque)
    needles = ("no unit of the model can be removed", "fc1: 8/8 units frozen by erf at node erf")
    assert_refused(result, 1, needles, out)


def test_extract_reports_the_frozen_share_and_warns_above_half(tmp_path):
    result, out = _extract(tmp_path, make_mostly_frozen, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    frozen = summary["frozen"]
    assert (frozen["units"], frozen["in_scope"], frozen["share"]) == (16, 20, 0.8)
    assert frozen["modules"][0] == {
        "module": "wide",
        "units": 16,
        "total": 16,
        "why": "read by erf, which legoc cannot slice through",
        "at": "erf at node erf",
    }
    (warning,) = summary["warnings"]
    assert warning.startswith("16 of 20 units in scope (80%) are frozen")
    assert "wide: 16/16 units frozen by erf at node erf" in warning
    assert "warning: 16 of 20 units in scope (80%) are frozen" in result.stderr
    assert out.exists()


def test_extract_of_a_model_with_nothing_frozen_reports_zero(tmp_path):
    from tests.helpers import write_task

    task = write_task(tmp_path / "mlp", "mlp")
    out = tmp_path / "block.onnx"
    args = ["extract", str(task["model"]), "--task", str(task["spec"]), "-o", str(out)]
    result = runner.invoke(app, [*args, "--arch", task["arch"], "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frozen"]["units"] == 0 and summary["frozen"]["modules"] == []
    assert summary["warnings"] == []


def test_a_kl_gap_too_small_to_measure_is_an_error_naming_both_values(tmp_path):
    result, out = _extract(tmp_path, make_barely_used, metric="kl")
    needles = ("data.search: the emptied model scores", "and the full model", "too small")
    assert_refused(result, 2, needles, out)
