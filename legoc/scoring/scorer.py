"""Scoring a kept-unit mask: the task metric on a split, with removed units ablated.

The scoring copy of the graph has an `Ablate` module after every producer; a candidate is
scored by setting their masks and running the data through in batches, so memory stays bounded
by the batch size, not the data size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from legoc.errors import LegocError
from legoc.ir.core import IR, run_quietly
from legoc.ir.masking import instrument, set_masks
from legoc.ir.ops import Ablate
from legoc.scoring.journal import Journal, evaluation_key
from legoc.scoring.prefix import PrefixCache
from legoc.task.data import Split
from legoc.task.metrics import Metric, faithfulness

log = logging.getLogger(__name__)

DEFAULT_BATCH = 128  # small enough that failing candidates stop early
# What one scoring batch's activations may take: the batch size, not the data size, sets the
# memory of scoring. 64 MB is already tens of thousands of rows for small models (overhead per
# batch is then negligible) and keeps peak memory flat as data grows (benchmarks/memory.py).
ACTIVATION_BUDGET_BYTES = 64 << 20
PREFIX_CACHE_BYTES = 128 << 20  # cut values kept so candidates run from their first change
ORDERED_SPLIT_BYTES = 256 << 20  # splits up to this size are scored hardest rows first
# rows of the first scoring batch: about this many multiply-accumulates (MiniLM: 16 sentences
# instead of 128, so a failing candidate is found out after a fifteenth of the split)
FIRST_BATCH_MACS = 2 << 30
MIN_FIRST_ROWS = 16

# The budget's unit is one candidate evaluation: a forward pass over the whole search split.
# Gradient work is charged in the same unit, so `search.budget` bounds all of a search's work:
# a forward + backward step over b of the split's N rows costs about three forwards of those
# rows (the backward pass is about twice the forward), i.e. GRADIENT_STEP_COST * b / N
# evaluations. An attribution pass (every row once) is charged GRADIENT_STEP_COST evaluations;
# a mask-training step over 64 of shapes' 600 rows, 0.32.
GRADIENT_STEP_COST = 3.0


def gradient_cost(rows: int, split_rows: int) -> float:
    """Evaluations-worth of one forward + backward step over `rows` of `split_rows` rows."""
    return GRADIENT_STEP_COST * rows / max(split_rows, 1)


TOKEN_MASK = "attention_mask"  # the forward argument that marks real tokens (1) and padding (0)


def prefer_channels_last(gm: torch.fx.GraphModule, ablates: dict[str, Ablate]) -> None:
    """Run a scoring graph's 2-d convolutions in channels-last layout (same values).

    On CPU, max-pooling NCHW tensors was slower than the convolutions themselves (shapes CNN:
    10.8 s of a 34 s search); channels-last made the full model's forward pass 1.9x faster."""
    weights = [t for t in [*gm.parameters(), *gm.buffers()] if t.dim() == 4]
    if not weights:
        return
    with torch.no_grad():
        for tensor in weights:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    for module in ablates.values():  # conv feature maps only (not e.g. 4-d attention heads)
        module.channels_last = module.ndim == 4 and module.axis == 1


def _scoring_graph(ir: IR) -> tuple[torch.fx.GraphModule, dict[str, Ablate]]:
    """The IR's graph with Ablate modules, laid out for fast CPU scoring, in eval mode."""
    gm, ablates = instrument(ir)
    prefer_channels_last(gm, ablates)
    return gm.eval(), ablates


@dataclass
class _Base:
    """A sliced model standing for every mask that removes at least what `kept` removes."""

    kept: dict[str, np.ndarray]
    gm: torch.fx.GraphModule
    ablates: dict[str, Ablate]
    index: dict[str, np.ndarray]  # space -> original unit index of each sliced unit

    def covers(self, kept: dict[str, np.ndarray]) -> bool:
        return all(not (mask & ~self.kept[name]).any() for name, mask in kept.items())


@dataclass
class Reference:
    """The full model on the search split: its metric, outputs (for kl) and ablation values."""

    full: float
    empty: float
    outputs: torch.Tensor | None


class Scorer:
    """Scores masks of one IR on one split; counts every candidate evaluation."""

    def __init__(
        self,
        ir: IR,
        split: Split,
        metric: Metric,
        ablation: str = "mean",
        batch_size: int = DEFAULT_BATCH,
        label: str = "data.search",
        values: dict[str, torch.Tensor] | None = None,
        cache_bytes: int | None = None,
    ):
        """`values`: ablation values to reuse (eval splits must use the search split's).
        `cache_bytes`: memory for the prefix cache (default PREFIX_CACHE_BYTES; 0: none, for
        scorers that only score a mask or two, like the eval splits')."""
        self.cache_bytes = PREFIX_CACHE_BYTES if cache_bytes is None else cache_bytes
        self.ir, self.split, self.metric = ir, split, metric
        self.batch_size = batch_size
        self.max_batch_size = _rows_within(ir, ACTIVATION_BUDGET_BYTES, batch_size)
        # a costly model's candidates get their first verdict after fewer rows
        self.first_rows = int(
            np.clip(FIRST_BATCH_MACS // max(ir.macs_per_row(), 1), MIN_FIRST_ROWS, batch_size)
        )
        self.label = label
        self.gm, self.ablates = _scoring_graph(ir)
        self._base: _Base | None = None
        self._active = self.gm
        self._prefix: dict[int, PrefixCache] = {}  # id(graph) -> its suffixes and cut values
        self._prefix_done = {"hits": 0, "misses": 0}  # counts of caches already dropped
        self.row_order: torch.Tensor | None = None  # scoring order of the rows (_order_rows)
        self.evaluations = 0  # candidate evaluations counted (the journal replays these)
        self.gradient_work = 0.0  # gradient steps charged, in evaluations (gradient_cost)
        self.deadline: float | None = None  # time.monotonic() at which searches must stop
        self.timed_out = False  # a search stopped because the deadline passed
        self.last_stopped_early = False
        self.journal: Journal | None = None  # answers and records counted evaluations (resume)
        self._check_labels_and_shapes()
        self.values = values if values is not None else self._ablation_values(ablation)
        for name, module in self.ablates.items():
            module.set(torch.ones(module.keep.shape[0], dtype=torch.bool), self.values[name])
        outputs = self._collect_outputs() if metric.needs_reference else None
        self.reference = Reference(full=0.0, empty=0.0, outputs=outputs)
        hardness = torch.zeros(len(split))
        self.reference.full = self._score(ir.mask_for([]), None, False, hardness)
        empty = ir.mask_for(ir.removable_groups())
        self.reference.empty = self.score(empty, count=False)
        self._order_rows(hardness)  # the full model's hardest rows first, until an attribution
        if metric.higher_is_better and self.reference.full <= 0:
            raise LegocError(
                f"{label}: the full model scores {self.reference.full:.4g} ({metric.name}), so "
                "faithfulness (a ratio to it) is undefined; check the labels and `outputs`"
            )

    # -- work and time --------------------------------------------------------------
    @property
    def work(self) -> float:
        """Everything counted against the budget: evaluations plus gradient steps charged."""
        return self.evaluations + self.gradient_work

    def charge_gradient(self, rows: int) -> None:
        """Count a forward + backward step over `rows` rows against the budget."""
        self.gradient_work += gradient_cost(rows, len(self.split))

    def time_up(self) -> bool:
        """Whether the deadline has passed (searches then stop with what they have)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out

    # -- set-up ---------------------------------------------------------------------
    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._active(*[inputs[name] for name in self.ir.input_names])

    def _check_labels_and_shapes(self) -> None:
        first = next(self.split.batches(2))
        try:
            out = run_quietly(self.gm, [first[0][name] for name in self.ir.input_names])
        except Exception as exc:  # noqa: BLE001 - report the model's complaint in one line
            shapes = {
                k: (tuple(v.shape[1:]), str(v.dtype).replace("torch.", ""))
                for k, v in self.split.inputs.items()
            }
            example = {
                k: (tuple(v.shape[1:]), str(v.dtype).replace("torch.", ""))
                for k, v in self.ir.example_inputs.items()
            }
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LegocError(
                f"{self.label}: inputs (per row) {shapes} do not fit the model, which expects "
                f"{example}: {msg}"
            ) from None
        y = self.split.y
        if y is None or self.metric.name == "mse":
            if y is not None and tuple(y.shape[1:]) != tuple(out.shape[1:]):
                raise LegocError(
                    f"{self.label}: targets 'y' have shape {tuple(y.shape[1:])} per "
                    f"row but the task outputs {tuple(out.shape[1:])}"
                )
            return
        if y.is_floating_point() or y.dtype == torch.bool:
            raise LegocError(
                f"{self.label}: labels 'y' must be integer class indices, got {y.dtype}"
            )
        n_classes = out.shape[-1]
        per_row = int(np.prod(out.shape[1:-1], dtype=np.int64))  # class scores per row
        if int(np.prod(y.shape[1:], dtype=np.int64)) != per_row:
            raise LegocError(
                f"{self.label}: labels 'y' have shape {tuple(y.shape[1:])} per row but the task "
                f"outputs {tuple(out.shape[1:])} per row: give one class index per "
                f"{'row' if per_row == 1 else 'position'} (y of shape {(len(y), *out.shape[1:-1])})"
            )
        low, high = self.split.value_range(y)
        if low < 0 or high >= n_classes:
            raise LegocError(
                f"{self.label}: labels 'y' range over [{low}, {high}] but the task has "
                f"{n_classes} outputs (labels index into `outputs` when the spec gives them)"
            )

    def _ablation_values(self, ablation: str) -> dict[str, torch.Tensor]:
        if ablation == "zero":
            return {name: torch.zeros(m.keep.shape[0]) for name, m in self.ablates.items()}
        for module in self.ablates.values():
            module.start_means()
        with torch.no_grad():
            for inputs, _, _ in self.split.batches(self.batch_size):
                mask = inputs.get(TOKEN_MASK)
                for module in self.ablates.values():
                    module.token_mask = mask if mask is not None and mask.dim() == 2 else None
                self._forward(inputs)
        for module in self.ablates.values():
            module.token_mask = None
        values = {}
        for name, module in self.ablates.items():
            values[name] = (module.mean_sum / max(module.mean_count, 1)).float()
            module.stop()
        return values

    def _collect_outputs(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [self._forward(inputs) for inputs, _, _ in self.split.batches(self.batch_size)]
            )

    # -- scoring --------------------------------------------------------------------
    def set_mask(self, kept: dict[str, np.ndarray], exact: bool = False) -> None:
        """Route the next forward passes to the cheapest model that computes this mask;
        `exact` insists on the masked source model itself (the oracle)."""
        base = self._base
        if not exact and base is not None and base.covers(kept):
            for name, module in base.ablates.items():
                module.set(torch.from_numpy(np.ascontiguousarray(kept[name][base.index[name]])))
            self._active = base.gm
            return
        set_masks(self.ablates, kept)
        self._active = self.gm

    def predict(
        self, kept: dict[str, np.ndarray], inputs: dict[str, torch.Tensor], exact: bool = False
    ) -> torch.Tensor:
        """Outputs of the model with `kept` units on `inputs` (by the route `score` takes)."""
        self.set_mask(kept, exact=exact)
        with torch.no_grad():
            return self._forward(inputs)

    @property
    def rebased(self) -> bool:
        """Whether the last mask was scored on a sliced base rather than the source model."""
        return self._active is not self.gm

    def rebase(self, kept: dict[str, np.ndarray]) -> None:
        """Score later masks that remove at least what `kept` removes on the physically sliced
        model of `kept`: same function (the rewrite is exact), fewer FLOPs."""
        from legoc.passes import REWRITE_PASSES, SCORING_PIPELINE, run_pipeline

        if all(mask.all() for mask in kept.values()):
            self._drop_prefix_cache()
            self._base = None
            return
        masked = self.ir.with_kept(kept)
        masked.ablation = dict(self.values)
        sliced, _ = run_pipeline(masked, [REWRITE_PASSES[n]() for n in SCORING_PIPELINE])
        gm, ablates = _scoring_graph(sliced)
        index = {name: np.flatnonzero(kept[name]) for name in ablates}
        for name, module in ablates.items():
            module.set(
                torch.ones(len(index[name]), dtype=torch.bool),
                self.values[name][torch.from_numpy(index[name])],
            )
        self._drop_prefix_cache()
        self._base = _Base({k: v.copy() for k, v in kept.items()}, gm, ablates, index)

    def gated_loss(self, gates: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Mean proxy loss on `rows` of the split with soft per-unit gates (0 = ablated),
        differentiable in the gates: what learned masks train on."""
        inputs, y, extras = self.split.take(rows)
        y_alt = extras.get("y_alt")
        ref = self.reference.outputs
        for name, module in self.ablates.items():
            module.gate = gates.get(name)
        try:
            self._active = self.gm
            logits = self._forward(inputs)
            loss = self.metric.proxy_loss(
                logits,
                y,
                None if ref is None else ref[rows],
                y_alt,
            )
        finally:
            for module in self.ablates.values():
                module.gate = None
        self.charge_gradient(len(rows))  # the caller's backward pass is part of the step
        return loss / len(rows)

    def _labelled_batches(self, growing: bool = False):
        """(rows, inputs, y, y_alt, full model's outputs or None) per batch of the split, in
        `row_order` when one is set; `growing` batches (for no-grad scoring) double from
        first_rows (fewer for costly models) up to the memory cap."""
        cap = self.max_batch_size if growing else None
        first = self.first_rows if growing else self.batch_size
        ref_all = self.reference.outputs
        if self.row_order is None:
            offset = 0
            for inputs, y, extras in self.split.batches(first, cap):
                rows = torch.arange(offset, offset + next(iter(inputs.values())).shape[0])
                ref = None if ref_all is None else ref_all[offset : offset + len(rows)]
                yield rows, inputs, y, extras.get("y_alt"), ref
                offset += len(rows)
            return
        start, size = 0, first
        while start < len(self.row_order):
            rows = self.row_order[start : start + size]
            if cap is not None:
                size = min(size * 2, cap)
            inputs, y, extras = self.split.take(rows)
            ref = None if ref_all is None else ref_all[rows]
            yield rows, inputs, y, extras.get("y_alt"), ref
            start += len(rows)

    def _order_rows(self, hardness: torch.Tensor) -> None:
        """Score the hardest rows for the current mask first: a candidate that falls short of
        keep is then rejected after its first batch instead of half-way through. The verdicts
        and full scores do not change (sums over the same rows); cached prefixes do, so they
        are dropped. Splits larger than ORDERED_SPLIT_BYTES keep their file order (random reads
        of a big memory-mapped file cost more than they save)."""
        if self.cache_bytes <= 0 or self.split.nbytes() > ORDERED_SPLIT_BYTES:
            return
        order = torch.argsort(hardness, descending=True, stable=True)
        if self.row_order is not None and torch.equal(order, self.row_order):
            return
        self.row_order = order
        for cache in self._prefix.values():
            cache.clear()

    def threshold(self, keep: float) -> float:
        """The metric value at which faithfulness equals `keep`."""
        ref = self.reference
        if self.metric.higher_is_better:
            return keep * ref.full
        return ref.empty - keep * (ref.empty - ref.full)

    def score(
        self,
        kept: dict[str, np.ndarray],
        count: bool = True,
        keep: float | None = None,
        exact: bool = False,
    ) -> float:
        """The metric of the model with `kept` units (others ablated) on the whole split.

        With `keep`, scoring stops as soon as the remaining rows cannot lift faithfulness to
        `keep` (same verdict, less work); the value returned is then that bound, which is
        below the threshold, and `last_stopped_early` is set. With a journal, a counted
        evaluation it has recorded is answered from it (and still counted).
        """
        journal = self.journal if count else None
        key = evaluation_key(kept, keep, exact) if journal is not None else ""
        entry = journal.answer(key) if journal is not None else None
        if entry is not None:
            self.set_mask(kept, exact=exact)  # leave the route as the live evaluation would
            self.last_stopped_early = entry.stopped_early
            self.evaluations += 1
            return entry.value
        value = self._score(kept, keep, exact)
        if count:
            self.evaluations += 1
        if journal is not None:
            journal.record(key, value, self.last_stopped_early)
        return value

    def _score(
        self,
        kept: dict[str, np.ndarray],
        keep: float | None,
        exact: bool,
        hardness: torch.Tensor | None = None,
    ) -> float:
        """The metric on the split (see `score`); `hardness`, if given, receives each row's
        `Metric.row_hardness`."""
        self.set_mask(kept, exact=exact)
        lo, hi = self.metric.item_bounds
        target = self.threshold(keep) if keep is not None else None
        total, n = 0.0, 0
        items_total = None
        self.last_stopped_early = False
        prefix = self._prefix_cache() if self.cache_bytes > 0 else None
        sigs = prefix.signatures() if prefix is not None else None
        with torch.no_grad():
            for batch, (rows, inputs, y, y_alt, ref) in enumerate(
                self._labelled_batches(growing=True)
            ):
                if prefix is None:
                    logits = self._forward(inputs)
                else:
                    logits = prefix.run(batch, [inputs[n] for n in self.ir.input_names], sigs)
                if hardness is not None:
                    hardness[rows] = self.metric.row_hardness(logits, y, ref, y_alt)
                s, c = self.metric.batch_sum(logits, y, ref, y_alt)
                if items_total is None:
                    items_total = c // logits.shape[0] * len(self.split)
                total, n = total + s, n + c
                if target is None or n >= items_total:
                    continue
                rest = items_total - n
                if self.metric.higher_is_better and (total + rest * hi) / items_total < target:
                    total, n, self.last_stopped_early = total + rest * hi, items_total, True
                    break
                if not self.metric.higher_is_better and (total + rest * lo) / items_total > target:
                    total, n, self.last_stopped_early = total + rest * lo, items_total, True
                    break
        return total / max(n, 1)

    def _prefix_cache(self) -> PrefixCache:
        """The active graph's cache; the others drop their values so that all of them
        together stay within `cache_bytes` (switching graphs is rare: exact checks)."""
        key = id(self._active)
        for other, cache in self._prefix.items():
            if other != key:
                cache.clear()
        if key not in self._prefix:
            self._prefix[key] = PrefixCache(self._active, self.cache_bytes)
        return self._prefix[key]

    def _drop_prefix_cache(self) -> None:
        """The sliced base is replaced: its suffixes and cut values go with it."""
        if self._base is not None and id(self._base.gm) in self._prefix:
            old = self._prefix.pop(id(self._base.gm))
            self._prefix_done["hits"] += old.hits
            self._prefix_done["misses"] += old.misses

    @property
    def prefix_stats(self) -> dict[str, int]:
        """Batches scored from a cached cut (hits) or from the inputs (misses)."""
        caches = self._prefix.values()
        return {
            "hits": self._prefix_done["hits"] + sum(c.hits for c in caches),
            "misses": self._prefix_done["misses"] + sum(c.misses for c in caches),
        }

    def faithfulness_of(self, value: float) -> float:
        return faithfulness(self.metric, value, self.reference.full, self.reference.empty)

    def faithfulness(
        self,
        kept: dict[str, np.ndarray],
        count: bool = True,
        keep: float | None = None,
        exact: bool = False,
    ) -> float:
        return self.faithfulness_of(self.score(kept, count=count, keep=keep, exact=exact))

    def attribution(self, kept: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """First-order estimate, per unit, of how much ablating it changes the task loss:
        mean over rows of |sum over positions of (ablation value - activation) * gradient|."""
        self.set_mask(kept)
        base = self._base if self._active is not self.gm else None
        ablates = base.ablates if base else self.ablates
        index = base.index if base else None
        for module in ablates.values():
            module.start_attribution()
        hardness = torch.zeros(len(self.split))
        with torch.enable_grad():
            for rows, inputs, y, y_alt, ref in self._labelled_batches():
                logits = self._forward(inputs)
                loss = self.metric.proxy_loss(logits, y, ref, y_alt)
                loss.backward()
                hardness[rows] = self.metric.row_hardness(logits.detach(), y, ref, y_alt)
        self._active.zero_grad(set_to_none=True)
        self.charge_gradient(len(self.split))
        self._order_rows(hardness)
        scores = {name: np.zeros(space.size) for name, space in self.ir.spaces.items()}
        for name, module in ablates.items():
            values = (module.attribution / max(len(self.split), 1)).numpy()
            scores[name][index[name] if index is not None else slice(None)] = values
            module.stop()
        return scores


def _rows_within(ir: IR, budget_bytes: int, floor: int) -> int:
    """How many rows a no-grad batch may hold so all its activations fit in `budget_bytes`."""
    per_row = 0
    for node in ir.gm.graph.nodes:
        shape = node.meta.get("legoc.shape")
        meta = node.meta.get("tensor_meta")
        if shape and meta is not None:
            per_row += int(np.prod([d for d in shape if d != "N"], dtype=np.int64)) * 4
    return max(floor, budget_bytes // max(per_row, 1))
