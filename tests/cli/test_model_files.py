"""Model files that can run code (DESIGN §3.1): a pickled module or an ExportedProgram is refused
without --trust-model, whatever it hides never runs, and with the flag it extracts like the safe
state dict."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.cli.helpers import assert_refused, extract, pickled_module
from tests.helpers import trained_model


@pytest.fixture(scope="module")
def exported_program(tmp_path_factory):
    path = tmp_path_factory.mktemp("ep") / "model.pt2"
    model = trained_model("mlp")
    torch.export.save(torch.export.export(model, (torch.randn(2, 6),)), str(path))
    return path


def test_exported_program_needs_trust_model(mlp_task, exported_program):
    result, out = extract(mlp_task, model=exported_program, arch=None)
    assert_refused(result, 2, ("ExportedProgram", "--trust-model", "state dict"), out)


def test_exported_program_with_trust_model_extracts_like_the_state_dict(mlp_task, exported_program):
    from_state, _ = extract(mlp_task, "--json", out=mlp_task["folder"] / "from_state.onnx")
    result, out = extract(mlp_task, "--trust-model", "--json", model=exported_program, arch=None)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]
    got, expected = json.loads(result.stdout), json.loads(from_state.stdout)
    for key in ("units_kept", "params", "faithfulness", "evaluations"):
        assert got[key] == expected[key], key


def test_pickled_module_with_trust_model_extracts(mlp_task):
    kwargs = pickled_module(mlp_task)
    result, out = extract(mlp_task, "--trust-model", **kwargs)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]
    assert out.stat().st_size > 0


class _WritesMarker:
    """Unpickling this object opens (creates) the marker file: code run by loading the model."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_code_in_model_file_never_runs_without_trust(mlp_task, container):
    marker = mlp_task["folder"] / "MARKER"
    path = mlp_task["folder"] / "trap.pt"
    state = {"fc1.weight": torch.zeros(8, 6), "trap": _WritesMarker(marker)}
    if container == "torch-zip":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    result, out = extract(mlp_task, model=path)
    assert_refused(result, 2, ("--trust-model", "can run code"), out)
    assert not marker.exists()
    # the trap is live: a plain unpickling does create the marker
    loaded = (
        pickle.loads(path.read_bytes())
        if container == "raw-pickle"
        else torch.load(path, weights_only=False)
    )
    loaded["trap"].close()
    assert marker.exists()
