"""Scoring a block on its task's data without torch: the spec's splits and metric in numpy.

The compiler validates specs fully (legoc.task, which needs torch); here only the keys a
deployed block needs are read: name, data.search, data.eval, metric. Metrics follow DESIGN §3.2
(`legoc.task.metrics`): accuracy, logit_diff (y_alt or the best wrong output), mse, and kl, which
needs reference logits (for a deployed block: the fp32 block's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from legoc.errors import LegocError
from legoc.runtime.data import inputs_for, read_arrays

METRICS = ("accuracy", "logit_diff", "mse", "kl")


@dataclass(frozen=True)
class TaskData:
    """The parts of a task spec a block needs at run time."""

    name: str
    metric: str
    splits: dict[str, Path]  # search first, then eval splits in spec order
    sha256: str
    path: Path


def read_task(path: str | Path) -> TaskData:
    import yaml  # only for specs; loading and running a block never needs it

    path = Path(path)
    if not path.is_file():
        raise LegocError(f"task spec {path}: file not found; pass --task path/to/spec.yaml")
    raw_bytes = path.read_bytes()
    try:
        raw = yaml.safe_load(raw_bytes.decode("utf-8", errors="replace"))
    except (yaml.YAMLError, RecursionError) as exc:  # deep nesting overflows the composer
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LegocError(
            f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or type(exc).__name__})"
            ": fix it"
        ) from None
    if not isinstance(raw, dict) or raw.get("legoc") != 1:
        raise LegocError(f"{path}: not a legoc task spec (it needs `legoc: 1`, name, data)")
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("search"), str):
        raise LegocError(f"{path}: data.search: required key is missing")
    evals = data.get("eval") or {}
    if not isinstance(evals, dict) or not all(isinstance(v, str) for v in evals.values()):
        raise LegocError(f"{path}: data.eval: must map split names to data files")
    metric = raw.get("metric", "accuracy")
    if metric not in METRICS:
        raise LegocError(f"{path}: metric: must be one of {list(METRICS)}")
    splits = {"search": data["search"], **{str(k): v for k, v in evals.items()}}
    resolved = {}
    for split, rel in splits.items():
        key = "data.search" if split == "search" else f"data.eval.{split}"
        try:
            resolved[split] = (path.parent / rel).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop; a NUL byte
            why = "is a symlink loop" if not isinstance(exc, ValueError) else "is not a valid path"
            raise LegocError(f"{path}: {key}: data file {rel!r} {why}") from None
        if not resolved[split].is_file():
            raise LegocError(f"{path}: {key}: data file {resolved[split]} not found")
    return TaskData(
        name=str(raw.get("name", "")),
        metric=metric,
        splits=resolved,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        path=path,
    )


@dataclass
class Split:
    name: str
    inputs: dict[str, np.ndarray]
    y: np.ndarray | None
    y_alt: np.ndarray | None

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]


def load_split(name: str, path: Path, input_names: list[str], label: str) -> Split:
    arrays = read_arrays(path, label)
    inputs = inputs_for(input_names, arrays, label, str(path))
    return Split(name, inputs, arrays.get("y"), arrays.get("y_alt"))


def metric_value(
    metric: str,
    logits: np.ndarray,
    y: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    y_alt: np.ndarray | None = None,
) -> float:
    """The mean of the metric over the items that count (accuracy as a fraction, not points):
    an item labelled IGNORE (-100) does not (`legoc.task.metrics`)."""
    items = _metric_items(metric, logits, y, reference, y_alt)
    counted = _counted(metric, items, y, y_alt)
    return float(items.mean() if counted is None else items[counted].mean())


IGNORE = -100  # a label that does not count (legoc.task.metrics.IGNORE)


def _counted(metric: str, items: np.ndarray, y, y_alt) -> np.ndarray | None:
    """Which items count (None: all): those whose integer labels are not IGNORE."""
    if metric == "mse" or y is None or np.asarray(y).dtype.kind not in "iu":
        return None
    labels = np.asarray(y).reshape(-1)
    if labels.size != items.size:
        return None
    counted = labels != IGNORE
    if metric == "logit_diff" and y_alt is not None:
        counted &= np.asarray(y_alt).reshape(-1) != IGNORE
    return counted


def _flat(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return logits.reshape(-1, logits.shape[-1])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


Runner = Callable[[dict[str, np.ndarray]], np.ndarray]  # inputs -> the block's first output


def logits_of(run: Runner, split: Split, batch_size: int = 256) -> np.ndarray:
    """A runner's output over a whole split, in batches."""
    n = len(split)
    return np.concatenate(
        [
            run({k: v[start : start + batch_size] for k, v in split.inputs.items()})
            for start in range(0, n, batch_size)
        ]
    )


def metric_rows(
    metric: str,
    logits: np.ndarray,
    y: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    y_alt: np.ndarray | None = None,
) -> np.ndarray:
    """The metric per row (a row's items averaged: tokens, outputs): what paired statistics
    over rows resample. Their mean is `metric_value` whenever rows hold equally many items."""
    items = _metric_items(metric, logits, y, reference, y_alt)
    return items.reshape(np.shape(logits)[0], -1).mean(axis=1)


def _metric_items(metric, logits, y, reference, y_alt) -> np.ndarray:
    """The metric of every item (row, token or output element), before any averaging."""
    logits = np.asarray(logits, dtype=np.float64)
    if metric == "kl":
        if reference is None:
            raise LegocError("metric kl: needs reference logits to compare against")
        ref = _log_softmax(_flat(reference))
        return (np.exp(ref) * (ref - _log_softmax(_flat(logits)))).sum(-1)
    if y is None:
        raise LegocError(f"metric {metric}: the data has no labels 'y'")
    if metric == "accuracy":
        return (_flat(logits).argmax(-1) == np.asarray(y).reshape(-1)).astype(np.float64)
    if metric == "logit_diff":  # IGNORE labels read index 0; those items do not count
        flat, labels = _flat(logits), np.maximum(np.asarray(y).reshape(-1), 0)
        index = np.arange(flat.shape[0])
        if y_alt is not None:
            other = flat[index, np.maximum(np.asarray(y_alt).reshape(-1), 0)]
        else:
            masked = flat.copy()
            masked[index, labels] = -np.inf
            other = masked.max(-1)
        return flat[index, labels] - other
    if metric == "mse":
        return (logits - np.asarray(y, dtype=np.float64)) ** 2
    raise LegocError(f"metric {metric}: unknown; use one of {list(METRICS)}")
