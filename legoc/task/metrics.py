"""Task metrics, accumulated over batches, plus a differentiable proxy for attribution.

A metric lives here (torch) and in `legoc.runtime.scores` (numpy, for deployed blocks); the spec
accepts the names in `legoc.task.spec.METRICS`. tests/runtime/test_scores.py checks that the
three agree, name for name and number for number (CONTRIBUTING.md: how to add one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # a label that does not count (padding, positions outside the task): HF's value


@dataclass(frozen=True)
class Metric:
    """A metric summed over batches; `proxy_loss` is what gradients follow (lower is better).

    Every method takes `at`, one position per row (`position` in the spec): the output, the
    full model's output and per-position labels are read at that position only. Items whose
    label is IGNORE do not count (for kl, whose labels are unused, `y` only marks them)."""

    name: str
    higher_is_better: bool
    needs_labels: bool
    needs_reference: bool  # compares against the full model's outputs
    training_loss: str  # what options A and C train with: cross_entropy | mse | kl
    item_bounds: tuple[float, float] = (float("-inf"), float("inf"))  # range of one item

    def batch_sum(
        self,
        logits: torch.Tensor,
        y: torch.Tensor | None,
        reference: torch.Tensor | None,
        y_alt: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> tuple[float, int]:
        """Return (sum of per-item scores, number of items that count) for one batch."""
        with torch.no_grad():
            values, counted = self._per_item(*at_position(at, logits, y, reference, y_alt))
        if counted is None:
            return float(values.sum()), int(values.numel())
        return float(values[counted].sum()), int(counted.sum())

    def proxy_loss(
        self,
        logits: torch.Tensor,
        y: torch.Tensor | None,
        reference: torch.Tensor | None,
        y_alt: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed (not averaged) smooth loss whose gradient ranks units by their effect."""
        logits, y, reference, y_alt = at_position(at, logits, y, reference, y_alt)
        if self.name == "accuracy":
            return F.cross_entropy(
                _flat(logits), y.reshape(-1), reduction="sum", ignore_index=IGNORE
            )
        values = _counted_only(*self._per_item(logits, y, reference, y_alt))
        return -values.sum() if self.higher_is_better else values.sum()

    def row_hardness(
        self,
        logits: torch.Tensor,
        y: torch.Tensor | None,
        reference: torch.Tensor | None,
        y_alt: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per row, how close it is to costing score (higher: scored first, so a candidate
        that falls short is found out after fewer rows). Accuracy: minus the smallest margin
        of the right class over the rest; the others: the item values against the metric's
        direction. Items that do not count are left out."""
        logits, y, reference, y_alt = at_position(at, logits, y, reference, y_alt)
        rows = logits.shape[0]
        with torch.no_grad():
            if self.name == "accuracy":
                margin = _margin(logits, y)
                margin = margin.masked_fill(y.reshape(-1) == IGNORE, float("inf"))
                return -margin.reshape(rows, -1).amin(-1)
            values = _counted_only(*self._per_item(logits, y, reference, y_alt))
            values = values.reshape(rows, -1)
            return -values.sum(-1) if self.higher_is_better else values.sum(-1)

    def _per_item(self, logits, y, reference, y_alt) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(value of every item, which items count or None for all)."""
        if self.name == "accuracy":
            labels = y.reshape(-1)
            return (_flat(logits).argmax(-1) == labels).float(), _counted(labels)
        if self.name == "logit_diff":
            counted = _counted(y.reshape(-1))
            if y_alt is not None:
                counted = counted & _counted(y_alt.reshape(-1))
            return _margin(logits, y, y_alt), counted
        if self.name == "kl":
            ref = F.log_softmax(_flat(reference), -1)
            cur = F.log_softmax(_flat(logits), -1)
            values = (ref.exp() * (ref - cur)).sum(-1)
            marks = y is not None and not y.is_floating_point() and y.numel() == values.numel()
            return values, _counted(y.reshape(-1)) if marks else None
        if self.name == "mse":
            return ((logits - y.to(logits.dtype)) ** 2).reshape(-1), None
        raise ValueError(f"unknown metric {self.name}")


def at_position(
    at: torch.Tensor | None,
    logits: torch.Tensor,
    y: torch.Tensor | None,
    reference: torch.Tensor | None,
    y_alt: torch.Tensor | None,
):
    """(logits, y, reference, y_alt) read at one position per row, `at` [rows] (None: all).
    Outputs are [rows, tokens, ...]; labels with a token axis are read there too, labels of
    one item per row are taken as they are."""
    if at is None:
        return logits, y, reference, y_alt
    rows = torch.arange(logits.shape[0])

    def pick(tensor):
        return None if tensor is None or tensor.dim() < 2 else tensor[rows, at]

    labels = [t if t is None or t.dim() < 2 else pick(t) for t in (y, y_alt)]
    return pick(logits), labels[0], pick(reference), labels[1]


def _counted(labels: torch.Tensor) -> torch.Tensor:
    return labels != IGNORE


def _counted_only(values: torch.Tensor, counted: torch.Tensor | None) -> torch.Tensor:
    """The item values with those that do not count set to 0 (sums and gradients skip them)."""
    return values if counted is None else values.masked_fill(~counted, 0.0)


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])


def _margin(logits: torch.Tensor, y: torch.Tensor, y_alt: torch.Tensor | None = None):
    """Per item: the label's logit minus the alternative's (default: the best other one).
    IGNORE labels read index 0 (their items do not count)."""
    flat, labels = _flat(logits), y.reshape(-1).clamp(min=0)
    correct = flat.gather(-1, labels[:, None])[:, 0]
    if y_alt is not None:
        return correct - flat.gather(-1, y_alt.reshape(-1).clamp(min=0)[:, None])[:, 0]
    masked = flat.masked_fill(F.one_hot(labels, flat.shape[-1]).bool(), float("-inf"))
    return correct - masked.max(-1).values


METRICS = {
    "accuracy": Metric(
        "accuracy",
        higher_is_better=True,
        needs_labels=True,
        needs_reference=False,
        training_loss="cross_entropy",
        item_bounds=(0.0, 1.0),
    ),
    "logit_diff": Metric(
        "logit_diff",
        higher_is_better=True,
        needs_labels=True,
        needs_reference=False,
        training_loss="cross_entropy",
    ),
    "kl": Metric(
        "kl",
        higher_is_better=False,
        needs_labels=False,
        needs_reference=True,
        training_loss="kl",
        item_bounds=(0.0, float("inf")),
    ),
    "mse": Metric(
        "mse",
        higher_is_better=False,
        needs_labels=True,
        needs_reference=False,
        training_loss="mse",
        item_bounds=(0.0, float("inf")),
    ),
}


def faithfulness(metric: Metric, value: float, full: float, empty: float) -> float:
    """Higher-is-better: m(r)/m(full); lower-is-better: (m(empty)-m(r))/(m(empty)-m(full))."""
    if metric.higher_is_better:
        return value / full
    span = empty - full
    return (empty - value) / span if span > 0 else (1.0 if value <= full else 0.0)
