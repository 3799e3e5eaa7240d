"""Every pass by name, and the named pipelines legoc runs.

Adding a pass: one file (under rewrite/, search/ or train/), one line in `PASSES`, one test
file. A pipeline is a plain string (`Pipeline.parse`): passes with nothing to do return
unchanged, so the named pipelines hold every pass that may apply.
"""

from __future__ import annotations

from legoc.passes.rewrite.align_channels import AlignChannels
from legoc.passes.rewrite.dce import DeadCodeElimination
from legoc.passes.rewrite.fold_ablations import FoldAblations
from legoc.passes.rewrite.fold_batch_norm import FoldBatchNorm
from legoc.passes.rewrite.slice_units import SliceUnits
from legoc.passes.search.attribution import AttributionSearch
from legoc.passes.search.auto import AutoSearch
from legoc.passes.search.greedy import GreedySearch
from legoc.passes.search.magnitude import MagnitudeSearch
from legoc.passes.search.masks import MaskSearch
from legoc.passes.search.mcts import MctsSearch
from legoc.passes.search.minimize import Minimize
from legoc.passes.search.repair import Repair
from legoc.passes.search.round_widths import RoundWidths
from legoc.passes.train.finetune import Finetune

PASSES: dict[str, type] = {
    p.name: p
    for p in (
        # search: decide the kept set
        AutoSearch,
        MaskSearch,
        MctsSearch,
        AttributionSearch,
        GreedySearch,
        MagnitudeSearch,
        Repair,
        Minimize,
        RoundWidths,
        # rewrite: restructure the graph
        FoldAblations,
        SliceUnits,
        FoldBatchNorm,
        DeadCodeElimination,
        AlignChannels,
        # train: change weights
        Finetune,
    )
}

# the task spec's search.method values (and --method's): a search pass each
METHODS = ("auto", "mask", "mcts", "attribution", "greedy")

# what `extract` runs after the method: repair if the exact masked model misses keep, make it
# 1-minimal with the budget left; under the macs objective round-widths trades alignment
# padding for whole channel blocks, a last minimize trims what that filled in, and a last
# repair catches a float flip on a sliced stand-in
SEARCH_TAIL = "repair,minimize,round-widths{{multiple={multiple}}},minimize,repair"
# the rewrite of a searched rationale into the block
BLOCK_PIPELINE = "fold-ablations,slice-units,fold-batch-norm,dce"
# what scoring may slice away without changing what a unit's output is (folding a BatchNorm
# into its producer would move the unit's output past the norm, away from its ablation value)
SCORING_PIPELINE = "fold-ablations,slice-units,dce"
# the runtime layout of the block at export (a layout choice, kept out of searches)
LAYOUT_PIPELINE = "align-channels{{multiple={multiple}}},dce"


def extract_pipeline(method: str, multiple: int) -> str:
    """The search pipeline of `legoc extract --method METHOD --align-channels MULTIPLE`."""
    return f"{method}," + SEARCH_TAIL.format(multiple=multiple)


def layout_pipeline(multiple: int) -> str:
    return LAYOUT_PIPELINE.format(multiple=multiple)
