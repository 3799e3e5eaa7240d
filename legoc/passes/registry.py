"""Every pass by name, and the named pipelines legoc runs.

Adding a pass: one file (under rewrite/, search/ or train/), one line in `PASSES`, one test
file. A pipeline is a plain string (`parse_pipeline`): passes with nothing to do return
unchanged, so the named pipelines hold every pass that may apply.
"""

from __future__ import annotations

from legoc.passes.base import Pipeline
from legoc.passes.rewrite import (
    BLOCK_PIPELINE,
    LAYOUT_PIPELINE,
    REWRITES,
    SCORING_PIPELINE,
    layout_pipeline,
)
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
    **REWRITES,  # rewrite: restructure the graph (legoc.passes.rewrite)
    **{
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
            # train: change weights
            Finetune,
        )
    },
}

# the task spec's search.method values (and --method's): a search pass each
METHODS = ("auto", "mask", "mcts", "attribution", "greedy")

# what `extract` runs after the method: repair if the exact masked model misses keep, make it
# 1-minimal with the budget left; under the macs objective round-widths trades alignment
# padding for whole channel blocks, a last minimize trims what that filled in, and a last
# repair catches a float flip on a sliced stand-in
SEARCH_TAIL = "repair,minimize,round-widths{{multiple={multiple}}},minimize,repair"


def extract_pipeline(method: str, multiple: int) -> str:
    """The search pipeline of `legoc extract --method METHOD --align-channels MULTIPLE`."""
    return f"{method}," + SEARCH_TAIL.format(multiple=multiple)


def parse_pipeline(text: str) -> Pipeline:
    """A pipeline of any registered passes, e.g. `auto,repair,round-widths{multiple=8}`."""
    return Pipeline.parse(text, PASSES)


__all__ = [
    "BLOCK_PIPELINE",
    "LAYOUT_PIPELINE",
    "METHODS",
    "PASSES",
    "SCORING_PIPELINE",
    "extract_pipeline",
    "layout_pipeline",
    "parse_pipeline",
]
