"""A searched rationale made into a block: rewritten (the block pipeline), optionally
retrained (option C), laid out for the runtime (the layout pipeline) and written with its
metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from legoc.export.metadata import block_metadata
from legoc.export.result import ExtractResult, Found
from legoc.export.writer import export_block
from legoc.ir.core import IR
from legoc.ir.frozen import frozen_report, frozen_warning
from legoc.ir.masking import masked_model
from legoc.ir.tokens import sequence_of
from legoc.passes.base import PassContext
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE, layout_pipeline
from legoc.passes.rewrite.align_channels import DEFAULT_MULTIPLE
from legoc.passes.train.finetune import Finetune
from legoc.scoring.prepare import Prepared, score_splits
from legoc.task.spec import FinetuneSpec


@dataclass
class Built:
    """A block ready to export: its IR, the torch module the export must agree with, and its
    description."""

    block: IR
    reference: torch.nn.Module
    result: ExtractResult


After = Callable[[str, IR], None]  # called with each pass's name and IR (--print-ir-after)


def build_block(
    prep: Prepared, found: Found, method: str, seed: int, after: After | None = None
) -> Built:
    """Rewrite a searched rationale into the sliced block (the block pipeline) and score it
    on every split."""
    rationale = found.ir
    scores = score_splits(prep, rationale.kept)
    rewritten = parse_pipeline(BLOCK_PIPELINE).run(rationale, PassContext(after=after))
    block, reports = rewritten.ir, rewritten.reports
    result = ExtractResult(
        task=prep.task.spec.name,
        output=None,
        kept=rationale.kept_units(),
        total=rationale.total_units(),
        params_source=prep.loaded.param_count(),
        params_block=block.param_count(),
        faithfulness=found.faithfulness,
        scores=scores,
        evaluations=found.evaluations,
        method=method,
        seconds=0.0,
        parity_max_abs_diff=None,
        one_minimal=found.one_minimal,
        keep=prep.task.spec.keep,
        passes=[*found.reports, *reports],
        trace=found.trace,
        seed=seed,
        budget=found.budget,
        warnings=[*found.warnings, *filter(None, [frozen_warning(prep.ir)])],
        frozen=frozen_report(prep.ir),
    )
    return Built(block, masked_model(rationale), result)


def finetune_block(prep: Prepared, built: Built, settings: FinetuneSpec, seed: int) -> Built:
    """Option C: retrain the block's weights on `search` (a seeded validation part held out
    for early stopping); the retrained block is its own export reference."""
    ctx = PassContext(scorer=prep.scorer, seed=seed)
    tuned = Finetune(epochs=settings.epochs, lr=settings.lr).run(built.block, ctx)
    scores = score_splits(prep, built.block.kept, module=tuned.ir.gm)
    result = replace(
        built.result,
        scores=scores,
        faithfulness=scores["search"].faithfulness,
        passes=[*built.result.passes, ("finetune", tuned.stats)],
        training={**tuned.report.metadata(), "faithfulness_before": built.result.faithfulness},
    )
    return Built(tuned.ir, tuned.ir.gm, result)


def write_block(
    prep: Prepared,
    built: Built,
    output: Path,
    extra: dict | None = None,
    align: int = DEFAULT_MULTIPLE,
    after: After | None = None,
) -> None:
    """Export the block with its metadata (plus `extra` keys) and record the parity.

    `align` > 1 pads conv channels to that multiple first (exact; `align-channels`): a layout
    choice for the runtime, so `params.block` stays the rationale's own count and the stored
    count goes to `legoc.layout`."""
    block = _aligned(built, align, after) if align > 1 else built.block
    metadata = {**block_metadata(prep, built.result), **(extra or {})}
    split = prep.splits["search"]
    built.result.parity_max_abs_diff = export_block(block, built.reference, split, output, metadata)
    built.result.output = str(output)
    lengths = sequence_of(block.gm)
    if lengths is not None and "fixed" in lengths:
        built.result.warnings.append(
            f"the block takes {lengths['min']} tokens only: the model fixes the token length "
            f"when captured ({lengths['fixed']})"
        )


def _aligned(built: Built, align: int, after: After | None = None) -> IR:
    """The block with its conv channels padded: the layout pipeline (records what changed in
    the result)."""
    ctx = PassContext(source_sizes=built.result.total, after=after)
    laid_out = parse_pipeline(layout_pipeline(align)).run(built.block, ctx)
    block, reports = laid_out.ir, laid_out.reports
    built.result.passes = [*built.result.passes, *reports]
    stats = reports[0][1]
    if not stats["channels_added"]:
        return built.block
    built.result.layout = {
        "align_channels": align,
        "channels_added": stats["channels_added"],
        "border_maps_folded": stats["border_maps_folded"],
        "stored_params": block.param_count(),
    }
    return block
