"""Rewrite passes restructure the graph: exact against the masked model, idempotent.

Their registry and the rewrite-only pipelines live here, below scoring (which slices candidates
with `SCORING_PIPELINE`), so nothing under the search layer is needed to run them.
"""

from legoc.passes.base import Pipeline
from legoc.passes.rewrite.align_channels import AlignChannels
from legoc.passes.rewrite.dce import DeadCodeElimination
from legoc.passes.rewrite.fold_ablations import FoldAblations
from legoc.passes.rewrite.fold_batch_norm import FoldBatchNorm
from legoc.passes.rewrite.slice_units import SliceUnits

REWRITES: dict[str, type] = {
    p.name: p
    for p in (FoldAblations, SliceUnits, FoldBatchNorm, DeadCodeElimination, AlignChannels)
}

# the rewrite of a searched rationale into the block
BLOCK_PIPELINE = "fold-ablations,slice-units,fold-batch-norm,dce"
# what scoring may slice away without changing what a unit's output is (folding a BatchNorm
# into its producer would move the unit's output past the norm, away from its ablation value)
SCORING_PIPELINE = "fold-ablations,slice-units,dce"
# the runtime layout of the block at export (a layout choice, kept out of searches)
LAYOUT_PIPELINE = "align-channels{{multiple={multiple}}},dce"


def layout_pipeline(multiple: int) -> str:
    return LAYOUT_PIPELINE.format(multiple=multiple)


def rewrite_pipeline(text: str) -> Pipeline:
    """A pipeline of rewrite passes only (what scoring and the block builder run)."""
    return Pipeline.parse(text, REWRITES)
