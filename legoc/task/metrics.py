"""Task metrics, accumulated over batches, plus a differentiable proxy for attribution.

A metric lives here (torch) and in `legoc.runtime.scores` (numpy, for deployed blocks); the spec
accepts the names in `legoc.task.spec.METRICS`. tests/runtime/test_scores.py checks that the
three agree, name for name and number for number (CONTRIBUTING.md: how to add one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Metric:
    """A metric summed over batches; `proxy_loss` is what gradients follow (lower is better)."""

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
    ) -> tuple[float, int]:
        """Return (sum of per-item scores, number of items) for one batch."""
        with torch.no_grad():
            values = self._per_item(logits, y, reference, y_alt)
        return float(values.sum()), int(values.numel())

    def proxy_loss(
        self,
        logits: torch.Tensor,
        y: torch.Tensor | None,
        reference: torch.Tensor | None,
        y_alt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed (not averaged) smooth loss whose gradient ranks units by their effect."""
        if self.name == "accuracy":
            return F.cross_entropy(_flat(logits), y.reshape(-1), reduction="sum")
        values = self._per_item(logits, y, reference, y_alt)
        return -values.sum() if self.higher_is_better else values.sum()

    def row_hardness(
        self,
        logits: torch.Tensor,
        y: torch.Tensor | None,
        reference: torch.Tensor | None,
        y_alt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per row, how close it is to costing score (higher: scored first, so a candidate
        that falls short is found out after fewer rows). Accuracy: minus the smallest margin
        of the right class over the rest; the others: the item values against the metric's
        direction."""
        with torch.no_grad():
            if self.name == "accuracy":
                return -_margin(logits, y).reshape(logits.shape[0], -1).amin(-1)
            values = self._per_item(logits, y, reference, y_alt).reshape(logits.shape[0], -1)
            return -values.sum(-1) if self.higher_is_better else values.sum(-1)

    def _per_item(self, logits, y, reference, y_alt) -> torch.Tensor:
        if self.name == "accuracy":
            return (_flat(logits).argmax(-1) == y.reshape(-1)).float()
        if self.name == "logit_diff":
            return _margin(logits, y, y_alt)
        if self.name == "kl":
            ref = F.log_softmax(_flat(reference), -1)
            cur = F.log_softmax(_flat(logits), -1)
            return (ref.exp() * (ref - cur)).sum(-1)
        if self.name == "mse":
            return ((logits - y.to(logits.dtype)) ** 2).reshape(-1)
        raise ValueError(f"unknown metric {self.name}")


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])


def _margin(logits: torch.Tensor, y: torch.Tensor, y_alt: torch.Tensor | None = None):
    """Per item: the label's logit minus the alternative's (default: the best other one)."""
    flat, labels = _flat(logits), y.reshape(-1)
    correct = flat.gather(-1, labels[:, None])[:, 0]
    if y_alt is not None:
        return correct - flat.gather(-1, y_alt.reshape(-1)[:, None])[:, 0]
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
