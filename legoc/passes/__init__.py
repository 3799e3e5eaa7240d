"""Passes over the IR: search passes decide the kept units, rewrite passes restructure the graph.

Each pass is a frozen dataclass with a kebab-case `name`, whose `run` returns a `PassResult`
(the new IR and counts of what changed). `SEARCH_PASSES` names the search methods;
`REWRITE_PIPELINE` lists the rewrite passes in order. `Finetune` (option C) trains weights and
runs only when asked for, after the rewrite pipeline; `AlignChannels` pads the final block's
conv channels for onnxruntime at export (a layout choice, kept out of searches and training);
`RoundWidths` is the search-side counterpart under the MACs objective (fewer padded channels).
"""

from legoc.passes.base import PassResult, run_pipeline
from legoc.passes.rewrite.align_channels import AlignChannels
from legoc.passes.rewrite.dce import DeadCodeElimination
from legoc.passes.rewrite.fold_ablations import FoldAblations
from legoc.passes.rewrite.fold_batch_norm import FoldBatchNorm
from legoc.passes.rewrite.slice_units import SliceUnits
from legoc.passes.search.attribution import AttributionSearch
from legoc.passes.search.auto import AutoSearch
from legoc.passes.search.greedy import GreedySearch
from legoc.passes.search.masks import MaskSearch
from legoc.passes.search.mcts import MctsSearch
from legoc.passes.search.minimize import Minimize
from legoc.passes.search.repair import Repair
from legoc.passes.search.round_widths import RoundWidths
from legoc.passes.train.finetune import Finetune

SEARCH_PASSES = {
    p.name: p for p in (AutoSearch, MctsSearch, MaskSearch, AttributionSearch, GreedySearch)
}
REWRITE_PASSES = {
    p.name: p for p in (FoldAblations, SliceUnits, FoldBatchNorm, DeadCodeElimination)
}
REWRITE_PIPELINE = ("fold-ablations", "slice-units", "fold-batch-norm", "dce")
# What scoring may slice away without changing what a unit's output is (folding a BatchNorm
# into its producer would move the unit's output past the norm, away from its ablation value).
SCORING_PIPELINE = ("fold-ablations", "slice-units", "dce")

__all__ = [
    "AlignChannels",
    "AttributionSearch",
    "AutoSearch",
    "DeadCodeElimination",
    "Finetune",
    "FoldAblations",
    "FoldBatchNorm",
    "GreedySearch",
    "MaskSearch",
    "MctsSearch",
    "Minimize",
    "PassResult",
    "REWRITE_PASSES",
    "REWRITE_PIPELINE",
    "Repair",
    "RoundWidths",
    "SCORING_PIPELINE",
    "SEARCH_PASSES",
    "SliceUnits",
    "run_pipeline",
]
