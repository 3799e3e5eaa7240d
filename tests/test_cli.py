"""The `legoc` command (DESIGN §3.1-3.4): bad input gets one error line and exit 2, an unmet task
exit 1, never a traceback and never a partial block; good input writes the block and a summary."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from legoc.cli import app
from tests.helpers import (
    ARCH,
    assert_float_close,
    assert_one_error_line,
    make_search_fall_short,
    trained_model,
    write_task,
)

runner = CliRunner()
TASK_ARCH = object()  # sentinel: pass the task's own --arch


def extract(
    task: dict,
    *extra: str,
    model: Path | None = None,
    spec: Path | None = None,
    arch=TASK_ARCH,
    out: Path | None = None,
):
    """Run `legoc extract` on a task folder; the block goes to its own empty folder."""
    if out is None:
        out = task["folder"].parent / "out" / "block.onnx"
        out.parent.mkdir(exist_ok=True)
    args = [
        "extract",
        str(model or task["model"]),
        "--task",
        str(spec or task["spec"]),
        "-o",
        str(out),
    ]
    if arch is TASK_ARCH:
        arch = task["arch"]
    if arch is not None:
        args += ["--arch", arch]
    return runner.invoke(app, [*args, *extra]), out


def assert_refused(result, exit_code: int, needles: tuple[str, ...], out: Path) -> None:
    """One `error:` line naming the problem, the right exit code, no traceback, nothing written."""
    assert_one_error_line(result, needles, exit_code)
    assert not out.exists()
    if out.parent.is_dir():
        assert sorted(os.listdir(out.parent)) == [], "a temp file or partial block was left"


def edit_spec(task: dict, changes: dict) -> Path:
    """Rewrite the task's spec with dotted-key changes, e.g. {"search.budget": 0}."""
    body = yaml.safe_load(task["spec"].read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = body
        for key in parents:
            node = node[key]
        node[last] = value
    task["spec"].write_text(yaml.safe_dump(body, sort_keys=False))
    return task["spec"]


def edit_data(task: dict, change, split: str = "search") -> None:
    path = task["folder"] / "data" / f"{split}.pt"
    data = torch.load(path, weights_only=True)
    torch.save(change(data), path)


# -- the bad-input matrix: each case prepares the task folder and returns extract() kwargs ----


def missing_model(task):
    return {"model": task["folder"] / "missing.pt"}


def empty_model(task):
    (task["folder"] / "empty.pt").write_bytes(b"")
    return {"model": task["folder"] / "empty.pt"}


def truncated_zip(task):
    data = task["model"].read_bytes()
    (task["folder"] / "half.pt").write_bytes(data[: len(data) // 2])
    return {"model": task["folder"] / "half.pt"}


def random_bytes(task):
    (task["folder"] / "noise.pt").write_bytes(random.Random(0).randbytes(4096))
    return {"model": task["folder"] / "noise.pt"}


def pickle_random_bytes(task):
    """Starts like a legacy torch.save (a pickle marker) but is garbage after it."""
    (task["folder"] / "noise.pt").write_bytes(b"\x80\x02" + random.Random(1).randbytes(4096))
    return {"model": task["folder"] / "noise.pt"}


def torchscript(task):
    path = task["folder"] / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still used
        torch.jit.save(torch.jit.script(trained_model("mlp")), str(path))
    return {"model": path}


def pickled_module(task):
    path = task["folder"] / "whole.pt"
    torch.save(trained_model("mlp"), path)
    return {"model": path, "arch": None}


def no_arch(task):
    return {"arch": None}


def spec_text(text):
    def case(task):
        task["spec"].write_text(text)
        return {}

    return case


def spec_change(**dotted):
    def case(task):
        edit_spec(task, {k.replace("__", "."): v for k, v in dotted.items()})
        return {}

    return case


def missing_spec(task):
    return {"spec": task["folder"] / "nope.yaml"}


def missing_eval_data(task):
    (task["folder"] / "data" / "iid.pt").unlink()
    return {}


def wrong_width(task):
    edit_data(task, lambda d: {"x": torch.randn(len(d["y"]), 9), "y": d["y"]})
    return {}


def eval_wrong_width(task):
    edit_data(task, lambda d: {"x": torch.randn(len(d["y"]), 9), "y": d["y"]}, "iid")
    return {}


def eval_labels_out_of_range(task):
    edit_data(task, lambda d: {"x": d["x"], "y": torch.full_like(d["y"], 9)}, "iid")
    return {}


def float_labels(task):
    edit_data(task, lambda d: {"x": d["x"], "y": d["y"].float()})
    return {}


def no_input_name(task):
    edit_data(task, lambda d: {"z": d["x"], "y": d["y"]})
    return {}


def labels_out_of_range(task):
    edit_data(task, lambda d: {"x": d["x"], "y": torch.full_like(d["y"], 7)})
    return {}


def nan_inputs(task):
    def change(d):
        x = d["x"].clone()
        x[3, 2] = float("nan")
        return {"x": x, "y": d["y"]}

    edit_data(task, change)
    return {}


def data_change(change, split: str = "search"):
    def case(task):
        edit_data(task, change, split)
        return {}

    return case


def truncated_data(task):
    path = task["folder"] / "data" / "search.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return {}


def npz_object_array(task):
    """An .npz whose arrays are pickled objects: legoc must refuse to unpickle them."""
    y = torch.load(task["folder"] / "data" / "search.pt", weights_only=True)["y"].numpy()
    x = np.array([{"a": 1}] * len(y), dtype=object)
    np.savez(task["folder"] / "data" / "search.npz", x=x, y=y)
    edit_spec(task, {"data.search": "data/search.npz"})
    return {}


def npz_corrupt(task):
    with zipfile.ZipFile(task["folder"] / "data" / "search.npz", "w") as archive:
        archive.writestr("x.npy", b"not an array")
        archive.writestr("y.npy", b"not an array")
    edit_spec(task, {"data.search": "data/search.npz"})
    return {}


def symlink_loop_data(task):
    loop = task["folder"] / "data" / "loop.pt"
    os.symlink(loop.name, loop)  # points at itself
    edit_spec(task, {"data.search": "data/loop.pt"})
    return {}


def missing_output_folder(task):
    return {"out": task["folder"].parent / "no_such_dir" / "block.onnx"}


def method_flag(task):
    return {"extra": ("--method", "bogus")}


def objective_flag(task):
    return {"extra": ("--objective", "flops")}


def align_flag(task):
    return {"extra": ("--align-channels", "-8")}


def model_output_flag(task):
    return {"extra": ("--model-output", "nope")}


BAD_INPUTS = [
    pytest.param(missing_model, 2, ("missing.pt", "not found"), id="model-missing"),
    pytest.param(empty_model, 2, ("empty.pt", "is empty"), id="model-empty"),
    pytest.param(truncated_zip, 2, ("half.pt", "corrupt"), id="model-truncated-zip"),
    pytest.param(random_bytes, 2, ("noise.pt", "corrupt"), id="model-random-bytes"),
    pytest.param(pickle_random_bytes, 2, ("noise.pt", "corrupt"), id="model-garbage-pickle"),
    pytest.param(torchscript, 2, ("TorchScript", "state dict"), id="model-torchscript"),
    pytest.param(
        pickled_module,
        2,
        ("--trust-model", "can run code", "state dict"),
        id="model-pickled-module-untrusted",
    ),
    pytest.param(no_arch, 2, ("is a state dict", "--arch"), id="state-dict-without-arch"),
    pytest.param(
        lambda t: {"arch": "no_such_pkg_legoc.models:make"},
        2,
        ("--arch", "cannot import no_such_pkg_legoc.models", "PYTHONPATH", "file.py:factory"),
        id="arch-does-not-import",
    ),
    pytest.param(
        lambda t: {"arch": "tests.helpers:no_such_factory"},
        2,
        ("--arch", "no callable named 'no_such_factory'"),
        id="arch-no-such-factory",
    ),
    pytest.param(
        lambda t: {"arch": "tests.helpers"},
        2,
        ("--arch", "package.module:factory"),
        id="arch-without-colon",
    ),
    pytest.param(
        lambda t: {"arch": ARCH["cnn"]},
        2,
        ("does not fit --arch", "conv1.weight"),
        id="arch-state-dict-does-not-fit",
    ),
    pytest.param(
        lambda t: {"arch": "tests.helpers:synthetic_task"},
        2,
        ("--arch", "the factory raised TypeError"),
        id="arch-factory-raises",
    ),
    pytest.param(missing_spec, 2, ("nope.yaml", "not found"), id="spec-missing"),
    pytest.param(
        spec_change(metrikk="accuracy"), 2, ("metrikk: unknown key",), id="spec-unknown-key"
    ),
    pytest.param(
        spec_change(search__budgett=5),
        2,
        ("search.budgett: unknown key",),
        id="spec-unknown-nested-key",
    ),
    pytest.param(
        spec_change(search__budget="many"), 2, ("search.budget:", "integer"), id="spec-ill-typed"
    ),
    pytest.param(
        spec_change(search__budget=0), 2, ("search.budget: must be > 0",), id="spec-budget-zero"
    ),
    pytest.param(spec_change(keep=0), 2, ("keep: must be > 0",), id="spec-keep-zero"),
    pytest.param(spec_change(legoc=2), 2, ("legoc: must be one of 1",), id="spec-version-2"),
    pytest.param(
        spec_text("legoc: 1\nname: [unclosed\n"), 2, ("not valid YAML",), id="spec-invalid-yaml"
    ),
    pytest.param(
        spec_change(search__method="bogus"),
        2,
        ("search.method: must be one of",),
        id="spec-unknown-method",
    ),
    pytest.param(method_flag, 2, ("--method 'bogus'", "auto"), id="flag-unknown-method"),
    pytest.param(objective_flag, 2, ("--objective 'flops'", "macs"), id="flag-unknown-objective"),
    pytest.param(align_flag, 2, ("--align-channels -8", "0 (off)"), id="flag-negative-align"),
    pytest.param(
        model_output_flag, 2, ("--model-output 'nope'", "a tensor"), id="flag-no-such-output"
    ),
    pytest.param(
        spec_change(data__search="data/nope.pt"),
        2,
        ("data.search", "nope.pt", "not found"),
        id="data-missing",
    ),
    pytest.param(
        missing_eval_data, 2, ("data.eval.iid", "iid.pt", "not found"), id="data-eval-missing"
    ),
    pytest.param(wrong_width, 2, ("data.search", "do not fit", "(9,)"), id="data-wrong-shape"),
    pytest.param(
        eval_wrong_width,
        2,
        ("data.eval.iid", "do not fit", "(9,)", "(6,)"),
        id="data-eval-wrong-shape",
    ),
    pytest.param(
        eval_labels_out_of_range,
        2,
        ("data.eval.iid", "labels 'y'", "[9, 9]"),
        id="data-eval-labels-out-of-range",
    ),
    pytest.param(
        float_labels, 2, ("data.search", "labels 'y' must be integer"), id="data-float-labels"
    ),
    pytest.param(no_input_name, 2, ("data.search", "no tensor 'x'"), id="data-missing-input"),
    pytest.param(
        labels_out_of_range,
        2,
        ("data.search", "labels 'y'", "[7, 7]", "4 outputs"),
        id="data-labels-out-of-range",
    ),
    pytest.param(nan_inputs, 2, ("data.search", "'x' contains NaN"), id="data-nan"),
    pytest.param(
        data_change(lambda d: {"x": d["x"].masked_fill(d["x"] > 2, float("inf")), "y": d["y"]}),
        2,
        ("data.search", "'x' contains NaN or infinite"),
        id="data-infinite",
    ),
    pytest.param(
        data_change(lambda d: {"x": d["x"].double(), "y": d["y"]}),
        2,
        ("data.search", "input 'x' is float64", "save the inputs as float32"),
        id="data-float64-inputs",
    ),
    pytest.param(
        data_change(lambda d: {"x": d["x"].half(), "y": d["y"]}, "iid"),
        2,
        ("data.eval.iid", "input 'x' is float16", "float32"),
        id="data-eval-float16-inputs",
    ),
    pytest.param(
        data_change(lambda d: {"x": (d["x"] * 10).long(), "y": d["y"]}),
        2,
        ("data.search", "do not fit the model", "int64", "Long and Float"),
        id="data-integer-inputs",
    ),
    pytest.param(
        data_change(lambda d: {"x": d["x"], "y": d["y"][:, None].repeat(1, 2)}),
        2,
        ("data.search", "labels 'y' have shape (2,) per row", "one class index per row"),
        id="data-labels-wrong-shape",
    ),
    pytest.param(
        data_change(lambda d: {"x": d["x"], "y": d["y"][:-3]}),
        2,
        ("data.search", "share a non-empty first dim", "'y': 125"),
        id="data-row-counts-differ",
    ),
    pytest.param(
        data_change(lambda d: {"x": d["x"][:0], "y": d["y"][:0]}),
        2,
        ("data.search", "non-empty first dim"),
        id="data-empty",
    ),
    pytest.param(
        data_change(lambda d: d["x"]),
        2,
        ("data.search", "must hold a dict of named tensors"),
        id="data-not-a-dict",
    ),
    pytest.param(
        truncated_data, 2, ("data.search", "search.pt", "not a tensor file"), id="data-truncated"
    ),
    pytest.param(npz_object_array, 2, ("data.search", "search.npz"), id="data-npz-object-array"),
    pytest.param(npz_corrupt, 2, ("data.search", "search.npz"), id="data-npz-corrupt"),
    pytest.param(
        spec_change(outputs=[0, 9]), 2, ("outputs:", "[9]", "4 outputs"), id="outputs-out-of-range"
    ),
    pytest.param(
        spec_change(keep=95),
        2,
        ("keep: must be a fraction in (0, 1]", "got 95", "write 0.95, not 95"),
        id="spec-keep-a-percentage",
    ),
    pytest.param(
        spec_change(keep=1.5), 2, ("keep: must be a fraction in (0, 1]",), id="spec-keep-above-one"
    ),
    pytest.param(
        spec_change(search__seed=-1),
        2,
        ("search.seed: must be an integer in [0, 2**63 - 1], got -1",),
        id="spec-seed-negative",
    ),
    pytest.param(
        spec_change(search__seed=2**63),
        2,
        ("search.seed: must be an integer in [0, 2**63 - 1]",),
        id="spec-seed-too-large",
    ),
    pytest.param(
        lambda t: {"extra": ("--seed", "-1")},
        2,
        ("--seed: must be an integer in [0, 2**63 - 1], got -1",),
        id="flag-seed-negative",
    ),
    pytest.param(
        lambda t: {"extra": ("--seed", str(2**63))},
        2,
        ("--seed: must be an integer in [0, 2**63 - 1]",),
        id="flag-seed-too-large",
    ),
    pytest.param(
        spec_text("legoc: 1\nname: x\ndata:\n  search: [a, b\nkeep: 0.9\n"),
        2,
        ("not valid YAML at line 5, column 5", "expected ',' or ']'"),
        id="spec-yaml-error-names-line-and-column",
    ),
    pytest.param(
        spec_change(data__search="data/sea\x00rch.pt"),
        2,
        ("data.search", "NUL byte"),
        id="data-path-nul-byte",
    ),
    pytest.param(
        symlink_loop_data, 2, ("data.search", "loop.pt", "symlink loop"), id="data-symlink-loop"
    ),
    pytest.param(
        missing_output_folder, 2, ("no_such_dir", "does not exist"), id="output-folder-missing"
    ),
]


@pytest.mark.parametrize("case, exit_code, needles", BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(mlp_task, case, exit_code, needles):
    kwargs = case(mlp_task)
    extra = kwargs.pop("extra", ())
    result, out = extract(mlp_task, *extra, **kwargs)
    assert_refused(result, exit_code, needles, out)
    assert not (mlp_task["folder"].parent / "no_such_dir").exists()


# `inspect --task` loads the model, spec and data as `extract` does: the same cases apply.
INSPECT_CASES = [
    case
    for case in BAD_INPUTS
    if case.id.split("-")[0] in {"model", "arch", "spec", "data", "outputs", "state"}
]


@pytest.mark.parametrize("case, exit_code, needles", INSPECT_CASES)
def test_inspect_refuses_the_same_bad_input(mlp_task, case, exit_code, needles):
    kwargs = case(mlp_task)
    arch = kwargs.get("arch", mlp_task["arch"])
    args = ["inspect", str(kwargs.get("model", mlp_task["model"]))]
    args += ["--task", str(kwargs.get("spec", mlp_task["spec"]))]
    args += ["--arch", arch] if arch is not None else []
    result = runner.invoke(app, args)
    empty = mlp_task["folder"].parent / "out"
    empty.mkdir()
    assert_refused(result, exit_code, needles, empty / "nothing")


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


@pytest.mark.parametrize(
    "spec, exit_code",
    [({"search.budget": 0}, 2), ({}, 1)],
    ids=["bad-spec", "task-not-met"],
)
def test_failed_run_leaves_existing_block_untouched(mlp_task, spec, exit_code, monkeypatch):
    out = mlp_task["folder"].parent / "out" / "block.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous block, must survive")
    edit_spec(mlp_task, spec)
    if exit_code == 1:
        make_search_fall_short(monkeypatch)
    result, _ = extract(mlp_task, out=out)
    assert result.exit_code == exit_code, result.output
    if exit_code == 1:
        assert_one_error_line(result, ("no rationale reaches keep=0.9",), 1)
    assert out.read_bytes() == b"previous block, must survive"
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]


def test_output_that_is_a_folder_is_refused(mlp_task):
    out = mlp_task["folder"].parent / "out" / "block.onnx"
    out.mkdir(parents=True)
    result, _ = extract(mlp_task, out=out)
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: output {out}: is a folder; give a file name like "
        "block.onnx"
    )
    assert out.is_dir() and sorted(os.listdir(out.parent)) == ["block.onnx"]


def test_budget_flag_below_one_is_usage_error(mlp_task):
    result, out = extract(mlp_task, "--budget", "0")
    assert result.exit_code == 2
    assert "--budget" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_debug_shows_the_traceback(mlp_task):
    result, out = extract(mlp_task, "--debug", model=mlp_task["folder"] / "missing.pt")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert "LegocError" in result.stderr
    assert "error: model file" in result.stderr
    assert not out.exists()


# -- successful runs -----------------------------------------------------------------------

# trainable parameters (`model.parameters()`); the cnn's 24 BatchNorm statistics are buffers
SOURCE_PARAMS = {"mlp": 164, "cnn": 1439, "planted": 99}
SUMMARY = re.compile(
    r"^(?P<out>\S+): kept (?P<kept>(\S+=\d+/\d+ ?)+) \| params (?P<src>[\d,]+) -> "
    r"(?P<blk>[\d,]+) \(\d+\.\d%(; stored [\d,]+ with alignment zeros)?\) \| "
    r"faithfulness search=(?P<search>\d\.\d{3}) iid=\d\.\d{3} \| "
    r"\d+ evaluations \| (?P<minimal>(not )?proven 1-minimal) \| \d+\.\ds$"
)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "planted"])
def test_extract_writes_block_and_one_line_summary(tmp_path, kind):
    task = write_task(tmp_path / "task", kind)
    result, out = extract(task)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out.parent)) == ["block.onnx"]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    assert match["out"] == str(out)
    assert int(match["src"].replace(",", "")) == SOURCE_PARAMS[kind]
    assert 0 < int(match["blk"].replace(",", "")) < SOURCE_PARAMS[kind]
    assert float(match["search"]) >= 0.9  # the spec's keep (printed rounded to 3 places)


def test_extract_json_summary(mlp_task):
    result, out = extract(mlp_task, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"units_kept", "params", "faithfulness", "scores", "evaluations", "seconds"} <= set(
        summary
    )
    assert set(summary["units_kept"]) == {"fc1", "fc2", "head"}
    assert re.fullmatch(r"\d+/8", summary["units_kept"]["fc1"])
    assert summary["params"]["source"] == SOURCE_PARAMS["mlp"]
    assert 0 < summary["params"]["block"] < summary["params"]["source"]
    assert summary["faithfulness"] >= 0.9
    assert set(summary["scores"]) == {"search", "iid"}
    for split in summary["scores"].values():
        assert set(split) == {"metric_full", "metric_block", "faithfulness"}
    assert_float_close(summary["scores"]["search"]["faithfulness"], summary["faithfulness"])
    assert 0 < summary["evaluations"] <= 200  # the spec's budget
    assert summary["seconds"] >= 0
    assert summary["output"] == str(out) and out.is_file()


def test_inspect_prints_ir_text(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x=6"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("graph(%x: f32[N,6]):")
    assert "units:\n  fc1: linear, 8/8 units kept" in result.stdout
    assert "params: 164\n" in result.stdout
    assert "scores" not in result.stdout


def test_inspect_without_shapes_or_task_is_usage_error(mlp_task):
    result = runner.invoke(app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"]])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--input-shape x=" in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_inspect_malformed_shape_is_usage_error(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x6"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: --input-shape 'x6': expected NAME=D1,D2,... "
        "(without batch)"
    )


def test_inspect_shape_that_does_not_fit_is_one_line(mlp_task):
    result = runner.invoke(
        app, ["inspect", str(mlp_task["model"]), "--arch", mlp_task["arch"], "--input-shape", "x=7"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not run on {'x': (7,)}" in lines[0], result.stderr


def test_inspect_with_task_scores_the_full_model(mlp_task):
    result = runner.invoke(
        app,
        [
            "inspect",
            str(mlp_task["model"]),
            "--arch",
            mlp_task["arch"],
            "--task",
            str(mlp_task["spec"]),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "graph(%x: f32[N,6]):" in result.stdout
    tail = result.stdout.split("scores (full model):\n", 1)[1]
    # labels are the trained model's own predictions, so the full model scores exactly 1
    assert tail == "  search: 1\n  iid: 1\n"
