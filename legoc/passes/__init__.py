"""Passes over the IR: search passes decide the kept units, rewrite passes restructure the
graph, train passes change weights (option C, opt-in).

Each pass is a frozen dataclass of its options with a kebab-case `name` and a `kind`; its
`run(ir, ctx)` returns a `PassResult`. `legoc.passes.registry` maps names to passes and holds
the named pipelines (plain strings, parsed by `Pipeline.parse`).
"""

from legoc.passes.base import (
    Pass,
    PassContext,
    PassFailed,
    PassOptionError,
    PassResult,
    Pipeline,
    PreconditionFailed,
)
from legoc.passes.registry import (  # the pass classes too, for `from legoc.passes import X`
    BLOCK_PIPELINE,
    METHODS,
    PASSES,
    SCORING_PIPELINE,
    AlignChannels,
    AttributionSearch,
    AutoSearch,
    DeadCodeElimination,
    Finetune,
    FoldAblations,
    FoldBatchNorm,
    GreedySearch,
    MagnitudeSearch,
    MaskSearch,
    MctsSearch,
    Minimize,
    Repair,
    RoundWidths,
    SliceUnits,
    extract_pipeline,
    layout_pipeline,
)

__all__ = [
    "AlignChannels",
    "AttributionSearch",
    "AutoSearch",
    "DeadCodeElimination",
    "Finetune",
    "FoldAblations",
    "FoldBatchNorm",
    "GreedySearch",
    "MagnitudeSearch",
    "MaskSearch",
    "MctsSearch",
    "Minimize",
    "Repair",
    "RoundWidths",
    "SliceUnits",
    "BLOCK_PIPELINE",
    "METHODS",
    "PASSES",
    "Pass",
    "PassContext",
    "PassFailed",
    "PassOptionError",
    "PassResult",
    "Pipeline",
    "PreconditionFailed",
    "SCORING_PIPELINE",
    "extract_pipeline",
    "layout_pipeline",
]
