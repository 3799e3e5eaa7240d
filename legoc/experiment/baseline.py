"""Option A: a small network trained from scratch on the `search` data only, sized to match a
block (or given sizes), exported as an ONNX block with the same interface and metadata keys.

The training is `legoc.training.fit`, the same loop option C uses (same loss, validation
carve-out and early stopping), so A and C differ only in where their weights start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import legoc
from legoc.api import versions
from legoc.errors import LegocError
from legoc.experiment.baseline_nets import (
    InputShapes,
    build,
    check_family,
    choose_family,
    match_width,
    param_count,
)
from legoc.export.writer import module_to_onnx, write_checked
from legoc.runtime.files import check_output_file
from legoc.task.data import Split, data_keys, load_split
from legoc.task.metrics import METRICS, Metric
from legoc.task.spec import Task, check_seed, load_task
from legoc.task.training import TrainConfig, evaluate, fit

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 100  # from scratch: a cap; early stopping on validation ends sooner
DEFAULT_LR = 3e-3
LABEL_KEYS = ("y", "y_alt")


@dataclass
class BaselineResult:
    output: str | None
    family: str
    width: int
    params: int
    target_params: int
    scores: dict[str, float]  # the task metric per split
    training: dict
    seconds: float
    parity_max_abs_diff: float | None = None

    def summary(self) -> dict:
        return {
            "output": self.output,
            "family": self.family,
            "width": self.width,
            "params": self.params,
            "target_params": self.target_params,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "training": self.training,
            "seconds": round(self.seconds, 2),
            "parity_max_abs_diff": self.parity_max_abs_diff,
        }


def input_shapes(
    splits: dict[str, Split], input_names: list[str], out_shape: tuple[int, ...]
) -> InputShapes:
    """Per-row shapes and dtypes of the inputs; the token vocabulary is sized to the largest
    id in any split (only the table's size: rows for ids absent from `search` stay untrained)."""
    search = splits["search"]
    shapes = {n: tuple(search.inputs[n].shape[1:]) for n in input_names}
    dtypes = {n: search.inputs[n].dtype for n in input_names}
    vocab = 0
    for name, dtype in dtypes.items():
        if not dtype.is_floating_point and "mask" not in name:
            vocab = max(int(s.inputs[name].max()) + 1 for s in splits.values())
    return InputShapes(shapes, dtypes, out_shape, vocab)


def label_out_shape(metric: Metric, search: Split, outputs: list[int] | None) -> tuple[int, ...]:
    """The block's output per row, read from the labels (for a baseline without a model)."""
    y = search.y
    if metric.name == "mse":
        return tuple(y.shape[1:])
    classes = len(outputs) if outputs is not None else int(y.max()) + 1
    return (*y.shape[1:], classes)


def train_baseline(
    family: str,
    inputs: InputShapes,
    target: int,
    splits: dict[str, Split],
    metric: Metric,
    config: TrainConfig,
    references: dict[str, torch.Tensor] | None = None,
    output: Path | None = None,
    metadata: dict | None = None,
) -> BaselineResult:
    """Build the family's network closest to `target` parameters, train it on `search`, score
    it on every split and (with `output`) export it, checked against itself in onnxruntime."""
    started = time.perf_counter()
    references = references or {}
    width, _ = match_width(family, inputs, target)
    torch.manual_seed(config.seed)
    module = build(family, inputs, width)
    report = fit(module, inputs.names, splits["search"], metric, config, references.get("search"))
    for param in module.parameters():
        param.requires_grad_(False)
    module.eval()
    scores = {
        name: evaluate(module, inputs.names, split, metric, references.get(name))
        for name, split in splits.items()
    }
    result = BaselineResult(
        output=None,
        family=family,
        width=width,
        params=param_count(module),
        target_params=target,
        scores=scores,
        training=report.metadata(),
        seconds=0.0,
    )
    if output is not None:
        example = {n: splits["search"].inputs[n][:2].clone() for n in inputs.names}
        model = module_to_onnx(module, inputs.names, example)
        meta = {
            **(metadata or {}),
            "legoc.baseline": {
                "family": family,
                "width": width,
                "params": result.params,
                "target_params": target,
            },
            "legoc.training": result.training,
            "legoc.scores": {name: {"metric_block": v} for name, v in scores.items()},
        }
        result.parity_max_abs_diff = write_checked(
            model, module, splits["search"], output, meta, inputs.names
        )
        result.output = str(output)
    result.seconds = time.perf_counter() - started
    return result


def baseline(
    task_path: str | Path,
    output: str | Path,
    like: str | Path | None = None,
    sizes: list[int] | None = None,
    family: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    seed: int = 0,
) -> list[BaselineResult]:
    """`legoc baseline`: option A from a spec alone, sized like a block or to given sizes.

    With several sizes, OUT.onnx becomes OUT-<size>.onnx per size."""
    output = Path(output)
    check_output_file(output, {"the task spec": task_path, "--like": like})
    check_seed(seed)
    check_family(family)
    if (like is None) == (not sizes):
        raise LegocError("baseline: give the size either as --like BLOCK.onnx or as --params N")
    task = load_task(task_path)
    metric = METRICS[task.spec.metric]
    if metric.needs_reference:
        raise LegocError(
            f"metric {metric.name}: a baseline trained without the model has no outputs to "
            "match; use `legoc compare MODEL`, which trains A against the model's outputs"
        )
    block = _like_block(like) if like is not None else None
    input_names = block.input_names if block is not None else _data_input_names(task)
    splits = _load_splits(task, input_names, metric)
    if block is not None:
        out_shape = tuple(d for d in block.outputs[0].shape[1:])
        targets = [block.rationale_params()]
    else:
        out_shape = label_out_shape(metric, splits["search"], task.spec.outputs)
        targets = list(sizes)
    inputs = input_shapes(splits, input_names, out_shape)
    family = family or choose_family(inputs)
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    metadata = {
        "legoc.version": legoc.__version__,
        "legoc.task": task.name,
        "legoc.spec_sha256": task.sha256,
        "legoc.metric": metric.name,
        "legoc.inputs": input_names,
        "legoc.versions": versions(),
    }
    results = []
    reads = {"the task spec": task.path, "--like": like}
    for name, path in task.split_paths().items():
        reads["data.search" if name == "search" else f"data.eval.{name}"] = path
    paths = (
        [output]
        if len(targets) == 1
        else [output.with_name(f"{output.stem}-{target}.onnx") for target in targets]
    )
    for path in paths:
        check_output_file(path, reads)
    for target, path in zip(targets, paths):
        results.append(
            train_baseline(family, inputs, target, splits, metric, config, None, path, metadata)
        )
    return results


def _like_block(path: str | Path):
    from legoc.runtime.block import Block

    path = Path(path)
    if not path.is_file():
        raise LegocError(f"--like {path}: file not found; give a block written by legoc extract")
    block = Block.load(path)
    shape = block.outputs[0].shape if block.outputs else None
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        raise LegocError(f"--like {path}: its output shape {shape} is not fixed beyond the batch")
    return block


def _data_input_names(task: Task) -> list[str]:
    path = task.data_path(task.spec.data.search)
    skip = (*LABEL_KEYS, task.spec.position)  # a per-row position index is not an input
    names = [k for k in data_keys(path, "data.search") if k not in skip]
    if not names:
        raise LegocError(f"data.search: {path} holds no inputs besides the labels")
    return names


def _load_splits(task: Task, input_names: list[str], metric: Metric) -> dict[str, Split]:
    splits = {}
    for name, path in task.split_paths().items():
        label = "data.search" if name == "search" else f"data.eval.{name}"
        splits[name] = load_split(
            name, path, input_names, label, metric.needs_labels, task.spec.position
        )
    return splits
