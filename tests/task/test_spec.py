"""The task spec (DESIGN §3.2): schema defaults, key-path errors, path resolution, data splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from legoc.errors import LegocError
from legoc.task.spec import TaskSpec, load_split, load_task, parse_spec

MINIMAL = "legoc: 1\nname: t\ndata: {search: s.pt}\n"


def spec_error(text: str) -> str:
    """The error for a spec text, without the 'spec.yaml: ' source prefix."""
    with pytest.raises(LegocError) as info:
        parse_spec(text, source="spec.yaml")
    assert info.value.exit_code == 2
    message = str(info.value)
    assert message.startswith("spec.yaml: "), message
    return message.removeprefix("spec.yaml: ")


def test_minimal_spec_gets_the_documented_defaults():
    spec = parse_spec(MINIMAL)
    assert (spec.legoc, spec.name, spec.data.search, spec.data.eval) == (1, "t", "s.pt", {})
    assert spec.metric == "accuracy"
    assert spec.keep == 0.95
    assert spec.ablation == "mean"
    assert (spec.search.method, spec.search.budget, spec.search.seed) == ("auto", 2000, 0)
    assert spec.outputs is None and spec.scope is None and spec.finetune is None


def test_design_example_round_trips():
    text = """
legoc: 1
name: circle-vs-square
data:
  search: data/search.pt
  eval: {iid: data/iid.pt, sketch: data/sketch.pt}
outputs: [0, 3]
metric: accuracy
keep: 0.95
ablation: mean
scope: [features.*, head.*]
search: {method: auto, budget: 2000, seed: 0}
finetune: {epochs: 5, lr: 1.0e-3}
"""
    spec = parse_spec(text)
    assert spec.data.eval == {"iid": "data/iid.pt", "sketch": "data/sketch.pt"}
    assert spec.outputs == [0, 3]
    assert spec.scope == ["features.*", "head.*"]
    assert (spec.finetune.epochs, spec.finetune.lr) == (5, 1.0e-3)
    assert TaskSpec.model_validate(spec.model_dump()) == spec


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("search: {budget: 0}", "search.budget: must be > 0"),
        ("search: {budget: -3}", "search.budget: must be > 0"),
        ("search: {budget: many}", "search.budget: Input should be a valid integer"),
        ("search: {budget: true}", "search.budget: Input should be a valid integer"),
        ("search: {budgett: 5}", "search.budgett: unknown key"),
        ("search: {method: bogus}", "search.method: must be one of 'auto', 'mcts', 'greedy'"),
        ("metrikk: accuracy", "metrikk: unknown key"),
        ("metric: f1", "metric: must be one of 'accuracy', 'kl', 'logit_diff' or 'mse'"),
        ("ablation: resample", "ablation: must be one of 'mean', 'zero' or 'mean-per-position'"),
        ("keep: 0", "keep: must be > 0"),
        ("finetune: {epochs: 0}", "finetune.epochs: must be > 0"),
        ("finetune: {lr: 0.0}", "finetune.lr: must be > 0"),
    ],
)
def test_error_starts_with_the_key_path(extra, expected):
    assert spec_error(MINIMAL + extra + "\n").startswith(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("legoc: 1\nname: t\n", "data: required key is missing"),
        ("legoc: 1\nname: t\ndata: {eval: {iid: i.pt}}\n", "data.search: required key is missing"),
        ("legoc: 1\ndata: {search: s.pt}\n", "name: required key is missing"),
        ("name: t\ndata: {search: s.pt}\n", "legoc: required key is missing"),
        ("legoc: 2\nname: t\ndata: {search: s.pt}\n", "legoc: must be one of 1"),
        ("legoc: 1\nname: t\ndata: {search: s.pt, eval: {iid: 3}}\n", "data.eval.iid: "),
        ("legoc: 1\nname: t\ndata: {search: s.pt, evall: {}}\n", "data.evall: unknown key"),
    ],
)
def test_required_and_nested_keys_are_named(text, expected):
    assert spec_error(text).startswith(expected)


def test_several_problems_name_the_first_and_count_the_rest():
    message = spec_error("legoc: 1\ndata: {}\n")
    assert message == "name: required key is missing (and 1 more problem(s))"


@pytest.mark.parametrize(
    "outputs, expected",
    [
        ("[]", "at least one"),
        ("[1, 1]", "distinct"),
        ("[0, 3, 0]", "distinct"),
        ("[-1]", ">= 0"),
    ],
)
def test_outputs_must_be_distinct_nonnegative_and_nonempty(outputs, expected):
    message = spec_error(MINIMAL + f"outputs: {outputs}\n")
    assert message.startswith("outputs: ") and expected in message


def test_outputs_keep_their_order():
    assert parse_spec(MINIMAL + "outputs: [3, 0, 2]\n").outputs == [3, 0, 2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "must be a YAML mapping"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("legoc: 1\nname: [unclosed\n", "not valid YAML"),
    ],
)
def test_not_a_mapping_or_not_yaml(text, expected):
    assert expected in spec_error(text)


def write_spec(folder: Path, search: str, eval_splits: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["legoc: 1", "name: t", "data:", f"  search: {search}"]
    if eval_splits:
        lines.append("  eval:")
        lines += [f"    {name}: {path}" for name, path in eval_splits.items()]
    spec = folder / "spec.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_relative_data_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    spec = write_spec(
        tmp_path / "task", "data/search.pt", {"iid": "data/iid.pt", "far": str(tmp_path / "far.pt")}
    )
    touch(tmp_path / "task" / "data" / "search.pt")
    touch(tmp_path / "task" / "data" / "iid.pt")
    touch(tmp_path / "far.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    task = load_task(Path("..") / "task" / "spec.yaml")
    paths = task.split_paths()
    assert list(paths) == ["search", "iid", "far"]
    assert paths["search"] == (tmp_path / "task" / "data" / "search.pt").resolve()
    assert paths["iid"] == (tmp_path / "task" / "data" / "iid.pt").resolve()
    assert paths["far"] == (tmp_path / "far.pt").resolve()
    assert task.name == "t"
    assert task.sha256 == hashlib.sha256(spec.read_bytes()).hexdigest()


def test_load_task_names_the_missing_file(tmp_path):
    with pytest.raises(LegocError, match=r"task spec .*nope\.yaml: file not found"):
        load_task(tmp_path / "nope.yaml")
    write_spec(tmp_path, "data/search.pt", {"iid": "data/iid.pt"})
    touch(tmp_path / "data" / "search.pt")
    with pytest.raises(LegocError, match=r"data\.eval\.iid: data file .*iid\.pt not found"):
        load_task(tmp_path / "spec.yaml")


def test_split_from_npz_maps_x_to_the_single_forward_argument(tmp_path):
    x, y = np.arange(15, dtype=np.float32).reshape(5, 3), np.arange(5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    split = load_split("search", tmp_path / "d.npz", ["inp"], "data.search", needs_labels=True)
    assert len(split) == 5
    assert torch.equal(split.inputs["inp"], torch.from_numpy(x))
    assert torch.equal(split.y, torch.from_numpy(y))


@pytest.mark.parametrize(
    "tensors, needs_labels, expected",
    [
        (
            {"x": torch.zeros(5, 3), "y": torch.zeros(4, dtype=torch.long)},
            True,
            "tensors must share a non-empty first dim",
        ),
        ({"x": torch.zeros(5, 3)}, True, "has no labels 'y'"),
        (
            {"z": torch.zeros(5, 3), "y": torch.zeros(5, dtype=torch.long)},
            True,
            "has no tensor 'x'",
        ),
        (
            {"x": torch.tensor([[0.0, float("inf"), 0.0]]), "y": torch.zeros(1, dtype=torch.long)},
            True,
            "'x' contains NaN or infinite values",
        ),
        ([torch.zeros(2)], True, "must hold a dict of named tensors"),
    ],
    ids=["rows-differ", "no-labels", "no-input", "inf", "not-a-dict"],
)
def test_bad_split_is_named(tmp_path, tensors, needs_labels, expected):
    torch.save(tensors, tmp_path / "d.pt")
    with pytest.raises(LegocError, match=r"^data\.search: ") as info:
        load_split("search", tmp_path / "d.pt", ["x"], "data.search", needs_labels)
    assert expected in str(info.value)
