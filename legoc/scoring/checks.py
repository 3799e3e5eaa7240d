"""Checks that a split fits the model and the task before scoring starts."""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from legoc.errors import LegocError
from legoc.ir.core import IR, run_quietly
from legoc.task.data import Split
from legoc.task.metrics import IGNORE, Metric, at_position


def check_split_fits(
    gm: torch.fx.GraphModule, ir: IR, split: Split, metric: Metric, label: str
) -> None:
    """One line naming what is wrong when the split's inputs do not fit the model or its
    labels do not fit the task's outputs and metric (before any scoring starts)."""
    first = next(split.batches(2))
    try:
        out = run_quietly(gm, [first[0][name] for name in ir.input_names])
    except Exception as exc:  # report the model's complaint in one line
        shapes = {
            k: (tuple(v.shape[1:]), str(v.dtype).replace("torch.", ""))
            for k, v in split.inputs.items()
        }
        example = {
            k: (tuple(v.shape[1:]), str(v.dtype).replace("torch.", ""))
            for k, v in ir.example_inputs.items()
        }
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LegocError(
            f"{label}: inputs (per row) {shapes} do not fit the model, which expects "
            f"{example}: {msg}"
        ) from None
    at = first[2].get("at")
    if at is not None:
        if out.dim() < 3:
            raise LegocError(
                f"position: {label}: the task reads one position per row but the model's output "
                f"{tuple(out.shape[1:])} per row has no token axis; use position: all"
            )
        out = at_position(at, out, None, None, None)[0]
    y = split.y
    if y is not None and at is not None and y.dim() >= 2:  # per-position labels: read at `at`
        y = y[:, 0]
    if y is None or metric.name == "mse":
        if y is not None and tuple(y.shape[1:]) != tuple(out.shape[1:]):
            raise LegocError(
                f"{label}: targets 'y' have shape {tuple(y.shape[1:])} per "
                f"row but the task outputs {tuple(out.shape[1:])}"
            )
        return
    if y.is_floating_point() or y.dtype == torch.bool:
        raise LegocError(f"{label}: labels 'y' must be integer class indices, got {y.dtype}")
    n_classes = out.shape[-1]
    per_row = int(np.prod(out.shape[1:-1], dtype=np.int64))  # class scores per row
    if int(np.prod(y.shape[1:], dtype=np.int64)) != per_row:
        raise LegocError(
            f"{label}: labels 'y' have shape {tuple(y.shape[1:])} per row but the task "
            f"outputs {tuple(out.shape[1:])} per row: give one class index per "
            f"{'row' if per_row == 1 else 'position'} (y of shape {(len(y), *out.shape[1:-1])})"
        )
    low, high = split.value_range(split.y, ignore=IGNORE)
    if low < 0 or high >= n_classes:
        raise LegocError(
            f"{label}: labels 'y' range over [{low}, {high}] but the task has "
            f"{n_classes} outputs (labels index into `outputs` when the spec gives them; "
            f"{IGNORE} marks an item that does not count)"
        )


# a lower-is-better metric's full-vs-emptied gap must exceed this many float32 steps at the
# values' magnitude: below it, rounding alone moves faithfulness by more than its whole range
GAP_STEPS = 64


def check_measurable_gap(metric: Metric, full: float, empty: float, label: str) -> None:
    """For kl and mse, faithfulness divides by m(empty) - m(full): when removing every
    prunable unit barely changes the metric, that ratio is rounding noise, not a score."""
    if metric.higher_is_better:
        return
    gap = empty - full
    floor = GAP_STEPS * float(np.finfo(np.float32).eps) * max(1.0, abs(full), abs(empty))
    if gap <= floor:
        raise LegocError(
            f"{label}: the emptied model scores {empty:.4g} and the full model {full:.4g} "
            f"({metric.name}), a gap of {gap:.2g}: too small to measure faithfulness (it must "
            f"exceed {floor:.1g}); the task must be one that removing units changes — check "
            "`outputs`, `scope` and the data"
        )
