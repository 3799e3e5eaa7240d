"""Scoring a kept-unit mask: the task metric on a split, with removed units ablated.

The scoring copy of the graph has an `Ablate` module after every producer; a candidate is
scored by setting their masks and running the data through in batches, so memory stays bounded
by the batch size, not the data size (`legoc.scoring.batching`). Masks that remove at least what
a search has already removed run on a sliced stand-in (`legoc.scoring.standin`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx

from legoc.errors import LegocError
from legoc.ir.core import IR
from legoc.ir.masking import instrument, set_masks
from legoc.ir.ops import Ablate
from legoc.passes.base import mask_key
from legoc.runtime import stop
from legoc.scoring.batching import DEFAULT_BATCH, Batching
from legoc.scoring.budget import gradient_cost
from legoc.scoring.checks import check_split_fits
from legoc.scoring.journal import Journal, evaluation_key
from legoc.scoring.prefix import PrefixCache
from legoc.scoring.standin import StandIn
from legoc.task.data import TOKEN_MASK, Split
from legoc.task.device import available_bytes
from legoc.task.metrics import IGNORE, Metric, faithfulness

if TYPE_CHECKING:
    from legoc.scoring.remote import BatchBackend

log = logging.getLogger(__name__)

# cut values kept so candidates run from their first change; None: sized by `_cache_bytes`
PREFIX_CACHE_BYTES: int | None = None
CACHE_SHARE, CACHE_FLOOR, CACHE_CEILING = 4, 128 << 20, 4 << 30


def _cache_bytes(device: torch.device) -> int:
    """A quarter of the device's free memory, 128 MiB to 4 GiB. One mask's cut values over
    GPT-2 small's search split (128 rows x 32 tokens) take hundreds of MiB: with a fixed
    128 MiB cache minimize's candidates mostly ran from the inputs (8.8 s each; 1.1 s now)."""
    if PREFIX_CACHE_BYTES is not None:
        return PREFIX_CACHE_BYTES
    free = available_bytes(device)
    if free is None:
        return CACHE_FLOOR
    return min(max(free // CACHE_SHARE, CACHE_FLOOR), CACHE_CEILING)


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


def _scoring_graph(
    ir: IR, device: torch.device | None = None
) -> tuple[torch.fx.GraphModule, dict[str, Ablate]]:
    """The IR's graph with Ablate modules, laid out for fast CPU scoring, in eval mode, on
    `device` (the IR's own graph stays where it is: rewrites and export read it)."""
    gm, ablates = instrument(ir)
    prefer_channels_last(gm, ablates)
    if device is not None:
        gm.to(device)
    return gm.eval(), ablates


def attention_spaces(ir: IR) -> set[str]:
    """Spaces whose units are attention heads' queries, keys or values."""
    return {
        space
        for group in ir.groups
        if "attention head" in group.coupled_by
        for space, _ in group.members
    }


@dataclass
class Reference:
    """The full model on the search split: its metric and outputs (for kl); the emptied
    model's metric is scored on first use (only lower-is-better metrics need it: one forward
    pass fewer before the first evaluation)."""

    full: float
    outputs: torch.Tensor | None
    score_empty: Callable[[], float] | None = None
    _empty: float | None = None

    @property
    def empty(self) -> float:
        if self._empty is None:
            self._empty = self.score_empty() if self.score_empty is not None else 0.0
        return self._empty


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
        device: torch.device | None = None,
    ):
        """`values`: ablation values to reuse (eval splits must use the search split's).
        `cache_bytes`: memory for the prefix cache (default `_cache_bytes`; 0: none, for
        scorers that only score a mask or two, like the eval splits'). `device`: where the
        scoring graph runs (default cpu); data moves there a batch at a time."""
        self.device = torch.device("cpu") if device is None else device
        self.cache_bytes = _cache_bytes(self.device) if cache_bytes is None else cache_bytes
        self.ir, self.split, self.metric = ir, split, metric
        self.batching = Batching(ir, split, batch_size, self.device)
        self.label = label
        self.gm, self.ablates = _scoring_graph(ir, self.device)
        self._stand_ins: dict[bytes, StandIn] = {}  # by mask: the last one built
        self._active = self.gm  # the graph of the scoring call under way
        self._prefix: dict[int, PrefixCache] = {}  # id(graph) -> its suffixes and cut values
        self._prefix_done = {"hits": 0, "misses": 0}  # counts of caches already dropped
        self.evaluations = 0  # candidate evaluations counted (the journal replays these)
        self.gradient_work = 0.0  # gradient steps charged, in evaluations (gradient_cost)
        self.last_stopped_early = False
        self.items: int | None = None  # items that count on the split (set by the full score)
        self.journal: Journal | None = None  # answers and records counted evaluations (resume)
        # scores candidates elsewhere, a batch at a time (`legoc.scoring.remote`); None: here
        self.backend: BatchBackend | None = None
        self._prefetched: dict[tuple[str, bytes], tuple[float, bool]] = {}
        self.remote_answers = 0  # scores taken from the backend's answers
        check_split_fits(self.gm, ir, split, metric, label, self.device)
        means = values is None and ablation != "zero"
        per_position = ablation == "mean-per-position"
        full, hardness, outputs = self._full_pass(means, per_position)  # one pass, means too
        if values is None:
            values = self._means() if means else self._zeros()
        self.values = values
        for name, module in self.ablates.items():
            module.set(torch.ones(module.keep.shape[0], dtype=torch.bool), self.values[name])
        self.reference = Reference(full=full, outputs=outputs, score_empty=self._score_empty)
        self._order_rows(hardness)  # the full model's hardest rows first, until an attribution
        if metric.higher_is_better and self.reference.full <= 0:
            raise LegocError(
                f"{label}: the full model scores {self.reference.full:.4g} ({metric.name}), so "
                "faithfulness (a ratio to it) is undefined; check the labels and `outputs`"
            )

    @property
    def batch_size(self) -> int:
        return self.batching.batch_size

    @property
    def row_order(self) -> torch.Tensor | None:
        """The order rows are scored in (hardest first once known; None: file order)."""
        return self.batching.row_order

    # -- work -----------------------------------------------------------------------
    def charge_gradient(self, rows: int) -> None:
        """Count a forward + backward step over `rows` rows (a `Budget` reads the count)."""
        self.gradient_work += gradient_cost(rows, len(self.split))

    # -- set-up ---------------------------------------------------------------------
    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._active(*self._on_device(inputs))

    def _on_device(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [inputs[name].to(self.device) for name in self.ir.input_names]

    def _full_pass(
        self, means: bool, per_position: bool = False
    ) -> tuple[float, torch.Tensor, torch.Tensor | None]:
        """The full model's metric, per-row hardness and (for kl) outputs in one pass over the
        split, accumulating the per-unit means on the way when `means` (set-up costs one
        forward pass, not three); `per_position` (mean-per-position): a mean per unit and
        token position where the layout has tokens."""
        metric, needs_ref = self.metric, self.metric.needs_reference
        if means:
            through_attention = attention_spaces(self.ir) if per_position else set()
            for name, module in self.ablates.items():
                # a per-position constant passed through attention would depend on the padding
                # mask, so could not be folded into a constant: heads keep one mean per unit
                module.start_means(per_position and name not in through_attention)
        hardness = torch.zeros(len(self.split))
        total, n, offset, outputs = 0.0, 0, 0, []
        self._active = self.gm
        with torch.no_grad():
            for inputs, y, extras in self.split.batches(self.batch_size):
                mask = inputs.get(TOKEN_MASK) if means else None
                mask = None if mask is None or mask.dim() != 2 else mask.to(self.device)
                for module in self.ablates.values():
                    module.token_mask = mask
                logits = self._forward(inputs)
                rows = slice(offset, offset + logits.shape[0])
                y, extras = self.batching.to_device(y), self.batching.extras_to_device(extras)
                ref = logits if needs_ref else None  # all positions: metrics read theirs (`at`)
                hardness[rows] = metric.row_hardness(logits, y, ref, **extras).cpu()
                s, c = metric.batch_sum(logits, y, ref, **extras)
                total, n, offset = total + s, n + c, rows.stop
                if needs_ref:
                    outputs.append(logits)
        for module in self.ablates.values():
            module.token_mask = None
        self._count_items(n)  # items that count (labels not IGNORE at the positions read)
        return total / n, hardness, torch.cat(outputs) if needs_ref else None

    def _means(self) -> dict[str, torch.Tensor]:
        """The per-unit means `_full_pass` accumulated (on the CPU: rewrites read them)."""
        values = {}
        for name, module in self.ablates.items():
            values[name] = module.means().cpu()
            module.stop()
        return values

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {name: torch.zeros(m.keep.shape[0]) for name, m in self.ablates.items()}

    def _score_empty(self) -> float:
        """The metric with every removable group ablated (lower-is-better faithfulness)."""
        return self.score(self.ir.mask_for(self.ir.removable_groups()), count=False)

    # -- scoring --------------------------------------------------------------------
    def _route(
        self, kept: dict[str, np.ndarray], exact: bool = False, base: StandIn | None = None
    ) -> None:
        """Point this call's forward passes at the model that computes this mask: `base`
        when given and it covers the mask (and not `exact`), else the masked source model."""
        if not exact and base is not None and base.covers(kept):
            base.route(kept)
            self._active = base.gm
            return
        set_masks(self.ablates, kept)
        self._active = self.gm

    def predict(
        self,
        kept: dict[str, np.ndarray],
        inputs: dict[str, torch.Tensor],
        exact: bool = False,
        base: StandIn | None = None,
    ) -> torch.Tensor:
        """Outputs of the model with `kept` units on `inputs` (by the route `score` takes)."""
        self._route(kept, exact=exact, base=base)
        with torch.no_grad():
            return self._forward(inputs)

    def stand_in(self, kept: dict[str, np.ndarray]) -> StandIn | None:
        """The physically sliced model of `kept` (None when it removes nothing), to score masks
        that remove at least what `kept` removes. Cached by mask: the last one is kept."""
        from legoc.passes.rewrite import SCORING_PIPELINE, rewrite_pipeline

        if all(mask.all() for mask in kept.values()):
            return None
        key = mask_key(kept)
        if key in self._stand_ins:
            return self._stand_ins[key]
        masked = self.ir.with_kept(kept)
        masked.ablation = dict(self.values)
        sliced = rewrite_pipeline(SCORING_PIPELINE).run(masked).ir
        gm, ablates = _scoring_graph(sliced, self.device)
        index = {name: np.flatnonzero(kept[name]) for name in ablates}
        for name, module in ablates.items():
            module.set(
                torch.ones(len(index[name]), dtype=torch.bool),
                self.values[name][..., torch.from_numpy(index[name])],
            )
        for old in self._stand_ins.values():
            self._drop_prefix_cache(old)
        stand_in = StandIn({k: v.copy() for k, v in kept.items()}, gm, ablates, index)
        self._stand_ins = {key: stand_in}
        return stand_in

    def gated_loss(self, gates: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Mean proxy loss on `rows` of the split with soft per-unit gates (0 = ablated),
        differentiable in the gates: what learned masks train on."""
        inputs, y, extras = self.split.take(rows)
        y, extras = self.batching.to_device(y), self.batching.extras_to_device(extras)
        ref = self.reference.outputs
        for name, module in self.ablates.items():
            gate = gates.get(name)
            module.gate = None if gate is None else gate.to(self.device)
        try:
            self._active = self.gm
            logits = self._forward(inputs)
            loss = self.metric.proxy_loss(
                logits,
                y,
                None if ref is None else ref[rows],
                **extras,
            )
        finally:
            for module in self.ablates.values():
                module.gate = None
        self.charge_gradient(len(rows))  # the caller's backward pass is part of the step
        return loss / len(rows)

    def _labelled_batches(self, growing: bool = False):
        """(rows, inputs, y, extras (y_alt, at), full model's outputs or None) per batch
        (`Batching`)."""
        return self.batching.labelled(self.reference.outputs, growing)

    def follow_rows(self, order: torch.Tensor | None) -> None:
        """Score rows in `order` (a remote worker follows its driver's `row_order`)."""
        current = self.batching.row_order
        if (order is None) == (current is None) and (order is None or torch.equal(order, current)):
            return
        self.batching.row_order = order
        for cache in self._prefix.values():
            cache.clear()

    # -- batches of independent candidates (a remote backend) -----------------------
    @property
    def width(self) -> int:
        """Candidates worth submitting together: the backend's workers (0: scored here)."""
        return 0 if self.backend is None else self.backend.width

    def prefetch(
        self, masks: list[dict[str, np.ndarray]], keep: float | None, base: StandIn | None
    ) -> None:
        """Score independent candidates together on the backend; `score` then answers them
        (still counted one at a time, when the search asks). Nothing happens without a backend
        and a candidate the search never asks for costs wall time, not budget: the search, its
        counts and its result are those of a local run."""
        if self.backend is None or (self.journal is not None and self.journal.replaying()):
            return
        if keep is not None:
            self.threshold(keep)  # the emptied model's score, if needed, before the batch
        base_key = mask_key(base.kept) if base is not None else b""
        self._prefetched = {k: v for k, v in self._prefetched.items() if k[1] == base_key}
        todo = []
        for kept in masks:
            key = (evaluation_key(kept, keep, False), base_key)
            if key in self._prefetched:
                continue
            todo.append((key, kept))
        if not todo:
            return
        base_kept = base.kept if base is not None else None
        answers = self.backend.score_many(
            self.batching.row_order, base_kept, [kept for _, kept in todo], keep
        )
        for (key, _), answer in zip(todo, answers):
            self._prefetched[key] = answer

    def prefetched(self, kept: dict[str, np.ndarray], keep: float | None, base) -> bool:
        """Whether `prefetch` has this candidate's score waiting (always True locally: there
        is nothing to wait for)."""
        if self.backend is None:
            return True
        base_key = mask_key(base.kept) if base is not None else b""
        return (evaluation_key(kept, keep, False), base_key) in self._prefetched

    def _order_rows(self, hardness: torch.Tensor) -> None:
        """Score the hardest rows for the current mask first: a candidate that falls short of
        keep is then rejected after its first batch instead of half-way through. The verdicts
        and full scores do not change (sums over the same rows); cached prefixes do, so they
        are dropped. Only scorers with a prefix cache reorder (the others score a mask or two)."""
        if self.cache_bytes > 0 and self.batching.reorder(hardness):
            self._prefetched.clear()  # scored in the old order: stopped early elsewhere
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
        base: StandIn | None = None,
    ) -> float:
        """The metric of the model with `kept` units (others ablated) on the whole split;
        on `base`, a sliced stand-in, when it covers the mask and `exact` is not set.

        With `keep`, scoring stops as soon as the remaining rows cannot lift faithfulness to
        `keep` (same verdict, less work); the value returned is then that bound, which is
        below the threshold, and `last_stopped_early` is set. With a journal, a counted
        evaluation it has recorded is answered from it (and still counted).
        """
        stop.check()  # a Ctrl-C or SIGTERM whose exception was lost stops the search here
        journal = self.journal if count else None
        key = evaluation_key(kept, keep, exact) if journal is not None else ""
        entry = journal.answer(key) if journal is not None else None
        if entry is not None:
            self.last_stopped_early = entry.stopped_early
            self.evaluations += 1
            return entry.value
        answered = self._take_prefetched(kept, keep, exact, base)
        if answered is not None:
            value, self.last_stopped_early = answered
        else:
            value = self._score(kept, keep, exact, base=base)
        if count:
            self.evaluations += 1
        if journal is not None:
            journal.record(key, value, self.last_stopped_early)
        return value

    def _take_prefetched(self, kept, keep, exact, base) -> tuple[float, bool] | None:
        if exact or not self._prefetched:
            return None
        base_key = mask_key(base.kept) if base is not None else b""
        answer = self._prefetched.pop((evaluation_key(kept, keep, False), base_key), None)
        self.remote_answers += answer is not None
        return answer

    def _score(
        self,
        kept: dict[str, np.ndarray],
        keep: float | None,
        exact: bool,
        hardness: torch.Tensor | None = None,
        base: StandIn | None = None,
    ) -> float:
        """The metric on the split (see `score`); `hardness`, if given, receives each row's
        `Metric.row_hardness`."""
        target = self.threshold(keep) if keep is not None else None  # may score empty: first
        self._route(kept, exact=exact, base=base)
        lo, hi = self.metric.item_bounds
        total, n = 0.0, 0
        items_total = None
        self.last_stopped_early = False
        prefix = self._prefix_cache() if self.cache_bytes > 0 else None
        sigs = prefix.signatures() if prefix is not None else None
        with torch.no_grad():
            for batch, (rows, inputs, y, extras, ref) in enumerate(
                self._labelled_batches(growing=True)
            ):
                if prefix is None:
                    logits = self._forward(inputs)
                else:
                    logits = prefix.run(batch, self._on_device(inputs), sigs)
                if hardness is not None:
                    hardness[rows] = self.metric.row_hardness(logits, y, ref, **extras).cpu()
                s, c = self.metric.batch_sum(logits, y, ref, **extras)
                if items_total is None:  # the first (full) score has no target: it reads all
                    items_total = self.items or c // logits.shape[0] * len(self.split)
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
        if self.items is None:
            self._count_items(n)
        return total / max(n, 1)

    def _count_items(self, n: int) -> None:
        if n == 0:
            raise LegocError(
                f"{self.label}: no item counts: every label is {IGNORE} (ignored) at the "
                "positions the task reads; check `y` and `position`"
            )
        self.items = n

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

    def _drop_prefix_cache(self, stand_in: StandIn) -> None:
        """A stand-in leaves the cache: its suffixes and cut values go with it."""
        if id(stand_in.gm) in self._prefix:
            old = self._prefix.pop(id(stand_in.gm))
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
        ref = self.reference
        empty = 0.0 if self.metric.higher_is_better else ref.empty  # unused: not scored
        return faithfulness(self.metric, value, ref.full, empty)

    def faithfulness(
        self,
        kept: dict[str, np.ndarray],
        count: bool = True,
        keep: float | None = None,
        exact: bool = False,
        base: StandIn | None = None,
    ) -> float:
        value = self.score(kept, count=count, keep=keep, exact=exact, base=base)
        return self.faithfulness_of(value)

    def attribution(
        self, kept: dict[str, np.ndarray], base: StandIn | None = None
    ) -> dict[str, np.ndarray]:
        """First-order estimate, per unit, of how much ablating it changes the task loss:
        mean over rows of |sum over positions of (ablation value - activation) * gradient|
        (on `base` when it covers the mask)."""
        self._route(kept, base=base)
        base = base if self._active is not self.gm else None
        ablates = base.ablates if base else self.ablates
        index = base.index if base else None
        for module in ablates.values():
            module.start_attribution()
        hardness = torch.zeros(len(self.split))
        with torch.enable_grad():
            for rows, inputs, y, extras, ref in self._labelled_batches():
                logits = self._forward(inputs)
                loss = self.metric.proxy_loss(logits, y, ref, **extras)
                if loss.requires_grad:  # else no kept unit reaches the output: nothing to rank
                    loss.backward()
                hardness[rows] = self.metric.row_hardness(logits.detach(), y, ref, **extras).cpu()
        self._active.zero_grad(set_to_none=True)
        self.charge_gradient(len(self.split))
        self._order_rows(hardness)
        scores = {name: np.zeros(space.size) for name, space in self.ir.spaces.items()}
        for name, module in ablates.items():
            values = (module.attribution / max(len(self.split), 1)).cpu().numpy()
            scores[name][index[name] if index is not None else slice(None)] = values
            module.stop()
        return scores
