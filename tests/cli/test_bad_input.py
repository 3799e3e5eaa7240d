"""Bad input to `legoc extract` / `legoc inspect` (DESIGN §3.1-3.4): one `error:` line, exit 2
(exit 1 for an unmet task), never a traceback, never a partial block, an existing block left as
it was."""

from __future__ import annotations

import os
import random
import warnings
import zipfile

import numpy as np
import pytest
import torch

from legoc.cli.app import app
from tests.cli.helpers import (
    assert_refused,
    edit_data,
    edit_spec,
    extract,
    pickled_module,
    runner,
)
from tests.helpers import ARCH, assert_one_error_line, make_search_fall_short, trained_model

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
    pytest.param(
        spec_change(ablation="mean-per-position"),
        2,
        ("ablation: mean-per-position", "token inputs"),
        id="spec-per-position-without-tokens",
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
