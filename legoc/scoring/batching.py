"""How a scorer reads its split: batch sizes and the order of rows.

No-grad scoring starts with a small first batch (fewer rows for costly models, so a failing
candidate is found out early) and doubles it up to what fits the activation budget; once the
full model has been scored, rows are read hardest first, so a candidate that falls short of
`keep` is rejected after its first batch instead of half-way through.
"""

from __future__ import annotations

import numpy as np
import torch

from legoc.ir.core import IR
from legoc.task.data import Split

DEFAULT_BATCH = 128  # small enough that failing candidates stop early
# What one scoring batch's activations may take: the batch size, not the data size, sets the
# memory of scoring. 64 MB is already tens of thousands of rows for small models (overhead per
# batch is then negligible) and keeps peak memory flat as data grows (benchmarks/memory.py).
ACTIVATION_BUDGET_BYTES = 64 << 20
# What a gradient batch's activations may take: backward keeps every activation of the batch.
# Attribution read 128 rows at once: GPT-2 small (128 x 32 tokens) held 3.3 GiB for it, the
# peak of the whole search (9.9 GiB); this many bytes is about 20 of its rows
GRADIENT_BUDGET_BYTES = 512 << 20
ORDERED_SPLIT_BYTES = 256 << 20  # splits up to this size are scored hardest rows first
# rows of the first scoring batch: about this many multiply-accumulates (MiniLM: 16 sentences
# instead of 128, so a failing candidate is found out after a fifteenth of the split)
FIRST_BATCH_MACS = 2 << 30
MIN_FIRST_ROWS = 16


def rows_within(ir: IR, budget_bytes: int, floor: int) -> int:
    """How many rows a no-grad batch may hold so all its activations fit in `budget_bytes`."""
    per_row = 0
    for node in ir.gm.graph.nodes:
        shape = node.meta.get("legoc.shape")
        meta = node.meta.get("tensor_meta")
        if shape and meta is not None:
            per_row += int(np.prod([d for d in shape if d != "N"], dtype=np.int64)) * 4
    return max(floor, budget_bytes // max(per_row, 1))


def first_batch_rows(ir: IR, batch_size: int) -> int:
    """Rows of the first no-grad batch: a costly model's candidates get their first verdict
    after fewer rows."""
    return int(np.clip(FIRST_BATCH_MACS // max(ir.macs_per_row(), 1), MIN_FIRST_ROWS, batch_size))


class Batching:
    """The batches a scorer reads its split in, and the order of its rows."""

    def __init__(
        self,
        ir: IR,
        split: Split,
        batch_size: int = DEFAULT_BATCH,
        device: torch.device | None = None,
    ):
        self.split = split
        self.device = torch.device("cpu") if device is None else device
        self.batch_size = batch_size
        self.max_batch_size = rows_within(ir, ACTIVATION_BUDGET_BYTES, batch_size)
        self.gradient_rows = min(batch_size, rows_within(ir, GRADIENT_BUDGET_BYTES, 1))
        self.first_rows = first_batch_rows(ir, batch_size)
        self.row_order: torch.Tensor | None = None  # scoring order of the rows (`reorder`)

    def labelled(
        self, reference: torch.Tensor | None, growing: bool = False, gradient: bool = False
    ):
        """(rows, inputs, y, extras, reference rows or None) per batch of the split, in
        `row_order` when one is set; `growing` batches (for no-grad scoring) double from
        first_rows up to the memory cap; `gradient` batches stay within GRADIENT_BUDGET_BYTES."""
        cap = self.max_batch_size if growing else None
        first = self.first_rows if growing else self.batch_size
        if gradient:
            first = self.gradient_rows
        if self.row_order is None:
            offset = 0
            for inputs, y, extras in self.split.batches(first, cap):
                rows = torch.arange(offset, offset + next(iter(inputs.values())).shape[0])
                ref = None if reference is None else reference[offset : offset + len(rows)]
                yield rows, inputs, self.to_device(y), self.extras_to_device(extras), ref
                offset += len(rows)
            return
        start, size = 0, first
        while start < len(self.row_order):
            rows = self.row_order[start : start + size]
            if cap is not None:
                size = min(size * 2, cap)
            inputs, y, extras = self.split.take(rows)
            ref = None if reference is None else reference[rows]
            yield rows, inputs, self.to_device(y), self.extras_to_device(extras), ref
            start += len(rows)

    def to_device(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """A batch's labels where the scoring graph runs (inputs move in `Scorer._forward`)."""
        return None if tensor is None else tensor.to(self.device)

    def extras_to_device(self, extras: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch's extras (`y_alt`, per-row positions `at`) where the scoring graph runs."""
        return {k: v.to(self.device) for k, v in extras.items()}

    def reorder(self, hardness: torch.Tensor) -> bool:
        """Read the hardest rows first; True when the order changed (results computed per
        batch in the old order are then stale). Splits larger than ORDERED_SPLIT_BYTES keep
        their file order (random reads of a big memory-mapped file cost more than they save)."""
        if self.split.nbytes() > ORDERED_SPLIT_BYTES:
            return False
        order = torch.argsort(hardness, descending=True, stable=True)
        if self.row_order is not None and torch.equal(order, self.row_order):
            return False
        self.row_order = order
        return True
