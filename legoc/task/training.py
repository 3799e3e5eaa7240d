"""Supervised training shared by option C (fine-tune a block) and option A (a baseline).

Both must train the same way for the A/B/C comparison to be fair: the same loss for the same
metric, the same seeded validation carve-out of `search`, the same early stopping. Nothing here
ever sees an eval split.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from legoc.errors import LegocError
from legoc.runtime import stop
from legoc.task.data import Split
from legoc.task.metrics import IGNORE, Metric, at_position


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs is a maximum; early stopping may end sooner."""

    epochs: int
    lr: float
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 5
    batch_size: int = 64


@dataclass
class TrainReport:
    """What training did, for metadata and reports (validation rows come from `search`)."""

    loss: str
    epochs: int
    epochs_run: int
    best_epoch: int  # 0: the weights before training were the best on validation
    lr: float
    seed: int
    data: str
    rows_train: int
    rows_val: int
    val_fraction: float
    patience: int
    val_loss_before: float
    val_loss_best: float
    val_metric_before: float
    val_metric_best: float

    def metadata(self) -> dict:
        return asdict(self)


def task_loss(
    metric: Metric,
    logits: torch.Tensor,
    y: torch.Tensor | None,
    reference: torch.Tensor | None,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean training loss for the task's metric: cross-entropy for accuracy and logit_diff
    (IGNORE labels left out), squared error for mse, KL to the full model's outputs for kl;
    at the task's position per row when `at` is given."""
    kind = metric.training_loss
    logits, y, reference, _ = at_position(at, logits, y, reference, None)
    if kind == "cross_entropy":
        flat = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, y.reshape(-1), ignore_index=IGNORE)
    if kind == "mse":
        return F.mse_loss(logits, y.to(logits.dtype))
    ref = F.log_softmax(reference.reshape(-1, reference.shape[-1]), -1)
    cur = F.log_softmax(logits.reshape(-1, logits.shape[-1]), -1)
    return F.kl_div(cur, ref, log_target=True, reduction="batchmean")


def carve_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train rows, validation rows) of `search`; both non-empty."""
    if n < 2:
        raise LegocError(f"data.search: {n} row(s) cannot be split into training and validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(n * fraction)))
    return order[n_val:], order[:n_val]


class _Rows:
    """The search split restricted to some rows, with the full model's outputs for kl."""

    def __init__(
        self,
        split: Split,
        rows: torch.Tensor,
        reference: torch.Tensor | None,
        device: torch.device | None = None,
    ):
        self.inputs = {k: v[rows] for k, v in split.inputs.items()}
        self.y = None if split.y is None else split.y[rows]
        self.reference = None if reference is None else reference[rows.to(reference.device)]
        self.at = split.extras["at"][rows] if "at" in split.extras else None
        self.n = len(rows)
        self.device = device if device is not None else torch.device("cpu")

    def batch(self, index: torch.Tensor):
        """One batch, moved to the training device (the rows stay where they were loaded)."""
        inputs = {k: v[index].to(self.device) for k, v in self.inputs.items()}
        y = None if self.y is None else self.y[index].to(self.device)
        ref = None if self.reference is None else self.reference[index].to(self.device)
        at = None if self.at is None else self.at[index].to(self.device)
        return inputs, y, ref, at


def evaluate(
    module: nn.Module,
    input_names: list[str],
    split: Split,
    metric: Metric,
    reference: torch.Tensor | None = None,
    batch_size: int = 256,
) -> float:
    """The task metric of a plain module on a whole split (`reference`: the full model's
    outputs on it, row-aligned, for kl)."""
    total, items, offset = 0.0, 0, 0
    module.eval()
    with torch.no_grad():
        for inputs, y, extras in split.batches(batch_size):
            logits = _forward(module, input_names, inputs)
            rows = logits.shape[0]
            ref = None if reference is None else reference[offset : offset + rows]
            ref = None if ref is None else ref.to(logits.device)
            extras = {k: v.to(logits.device) for k, v in extras.items()}
            s, c = metric.batch_sum(logits, y, ref, **extras)
            total, items, offset = total + s, items + c, offset + rows
    return total / max(items, 1)


def _forward(module: nn.Module, input_names: list[str], inputs: dict) -> torch.Tensor:
    return module(*[inputs[name] for name in input_names])


def _validate(
    module: nn.Module, input_names: list[str], rows: _Rows, metric: Metric, batch_size: int
) -> tuple[float, float]:
    """(mean loss, metric) on the validation rows."""
    loss_sum, metric_sum, items = 0.0, 0.0, 0
    with torch.no_grad():
        for start in range(0, rows.n, batch_size):
            index = torch.arange(start, min(start + batch_size, rows.n))
            inputs, y, ref, at = rows.batch(index)
            logits = _forward(module, input_names, inputs)
            loss_sum += float(task_loss(metric, logits, y, ref, at)) * len(index)
            s, c = metric.batch_sum(logits, y, ref, at=at)
            metric_sum, items = metric_sum + s, items + c
    return loss_sum / rows.n, metric_sum / max(items, 1)


def fit(
    module: nn.Module,
    input_names: list[str],
    split: Split,
    metric: Metric,
    config: TrainConfig,
    reference: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> TrainReport:
    """Train `module`'s parameters that require grad on `split` minus a seeded validation part
    (Adam, shuffled mini-batches); stop when validation loss has not improved for `patience`
    epochs and restore the best weights (the starting weights count as epoch 0).

    `reference`: the full model's outputs on `split`, row-aligned (needed for kl). `device`:
    where the steps run; the module is moved there and back to where it was."""
    if metric.needs_reference and reference is None:
        raise LegocError("metric kl: training needs the full model's outputs (pass the model)")
    torch.manual_seed(config.seed)
    train_rows, val_rows = carve_validation(len(split), config.val_fraction, config.seed)
    home = next((t.device for t in [*module.parameters(), *module.buffers()]), None)
    if device is not None:
        module.to(device)
    train = _Rows(split, train_rows, reference, device)
    val = _Rows(split, val_rows, reference, device)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    module.eval()  # blocks hold folded BatchNorms and no dropout; baselines have neither
    best_loss, best_metric = _validate(module, input_names, val, metric, config.batch_size)
    before = (best_loss, best_metric)
    best_state, best_epoch, epochs_run, waited = copy.deepcopy(module.state_dict()), 0, 0, 0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(train.n, generator=shuffle)
        for start in range(0, train.n, config.batch_size):
            stop.check()  # a Ctrl-C or SIGTERM whose exception was lost stops at the next step
            inputs, y, ref, at = train.batch(order[start : start + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss = task_loss(metric, _forward(module, input_names, inputs), y, ref, at)
            loss.backward()
            optimizer.step()
        epochs_run = epoch
        val_loss, val_metric = _validate(module, input_names, val, metric, config.batch_size)
        if math.isfinite(val_loss) and val_loss < best_loss:
            best_loss, best_metric, best_epoch, waited = val_loss, val_metric, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    module.load_state_dict(best_state)
    optimizer.zero_grad(set_to_none=True)
    if home is not None:
        module.to(home)
    return TrainReport(
        loss=metric.training_loss,
        epochs=config.epochs,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        lr=config.lr,
        seed=config.seed,
        data=split.name,
        rows_train=train.n,
        rows_val=val.n,
        val_fraction=config.val_fraction,
        patience=config.patience,
        val_loss_before=before[0],
        val_loss_best=best_loss,
        val_metric_before=before[1],
        val_metric_best=best_metric,
    )
