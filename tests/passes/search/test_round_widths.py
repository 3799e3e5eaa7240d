"""`round-widths` and the stored-width cost it compares: MACs at the widths align-channels
writes, and widths dropped to the multiple below by filling other widths' slack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from legoc import api
from legoc.passes.base import PassContext
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.passes.rewrite.align_channels import AlignChannels
from legoc.passes.search.minimize import Minimize
from legoc.passes.search.round_widths import RoundWidths
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import write_task
from tests.passes.helpers import masked, model_ir, random_ablation, run_search
from tests.passes.rewrite.test_align_channels import SOURCE, wide_cnn_ir

NEED = 40  # channels conv_a and conv_b must keep between them (the oracle below)
MULTIPLE = 16


class TwoConvs(nn.Module):
    """Two conv widths that do not constrain each other, read by a Linear head."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 32, 3, padding=1)
        self.conv_b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        x = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        return self.head(x.mean(dim=(2, 3)))


class SharedBudget(Scorer):
    """An oracle: faithfulness is the share of NEED channels conv_a and conv_b keep between
    them, so either layer's channels can stand in for the other's. Attribution ranks units
    by index (later ones matter more)."""

    def faithfulness(self, kept, count=True, keep=None, exact=False, base=None):
        if count:
            self.evaluations += 1
        self.last_stopped_early = False
        return min(1.0, float(kept["conv_a"].sum() + kept["conv_b"].sum()) / NEED)

    def attribution(self, kept, base=None):
        return {name: np.arange(1.0, space.size + 1) for name, space in self.ir.spaces.items()}


def two_convs(widths: dict[str, int]):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    ir = model_ir(TwoConvs().eval(), x)
    scorer = SharedBudget(
        ir, Split("search", {"x": x}, torch.zeros(8, dtype=torch.long)), METRICS["accuracy"]
    )
    removed = [
        g.index
        for g in ir.groups
        if g.frozen is None
        and g.members[0][0] in widths
        and g.members[0][1] >= widths[g.members[0][0]]
    ]
    masked_ir = ir.with_kept(ir.mask_for(removed))
    masked_ir.objective = "macs"  # round-widths trades padding only under the macs objective
    return masked_ir, scorer


def widths_of(ir) -> dict[str, int]:
    return {name: int(mask.sum()) for name, mask in ir.kept.items() if name.startswith("conv")}


def stored(ir) -> dict[str, int]:
    return {name: ir.stored_width(name, w, MULTIPLE) for name, w in widths_of(ir).items()}


def test_stored_width_rounds_conv_widths_up_within_the_source_width():
    ir = wide_cnn_ir()
    assert ir.stored_width("conv1", 7, 16) == 16
    assert ir.stored_width("conv1", 16, 16) == 16
    assert ir.stored_width("conv1", 17, 16) == 32
    assert ir.stored_width("conv1", 0, 16) == 0
    assert ir.stored_width("conv1", 7, 1) == 7
    assert ir.stored_width("conv1", 17, 24) == 24
    assert ir.stored_width("conv1", 25, 24) == 25  # 48 would be wider than the source's 32
    assert ir.stored_width("fc1", 7, 16) == 7  # Linear widths are not padded


@settings(max_examples=12, deadline=None)
@given(data=st.data(), multiple=st.sampled_from([4, 8, 16]))
def test_stored_macs_are_the_macs_of_the_aligned_block(data, multiple):
    ir = wide_cnn_ir()
    removed = sorted(data.draw(st.sets(st.sampled_from(ir.removable_groups())), label="removed"))
    block = parse_pipeline(BLOCK_PIPELINE).run(masked(ir, removed, random_ablation(ir, 0))).ir
    sizes = PassContext(source_sizes={"conv1": SOURCE, "conv2": SOURCE})
    aligned = AlignChannels(multiple).run(block, sizes).ir
    assert ir.sliced_macs(ir.mask_for(removed), multiple) == aligned.macs_per_row()
    assert ir.sliced_macs(ir.mask_for(removed)) == block.macs_per_row()


def test_a_width_drops_to_the_multiple_below_when_another_width_fills_its_slack():
    ir, scorer = two_convs({"conv_a": 17, "conv_b": 23})  # 40 kept: 1-minimal, stored 32 + 32
    before = ir.sliced_macs(ir.kept, MULTIPLE)
    result = run_search(RoundWidths(MULTIPLE), ir, scorer, 1.0, 100)
    assert stored(result.ir) == {"conv_a": 16, "conv_b": 32}
    assert widths_of(result.ir) == {"conv_a": 16, "conv_b": 32}  # conv_b's slack filled
    assert result.stats["widths_dropped"] == 1
    assert result.stats["stored_macs_before"] == before
    assert result.stats["stored_macs_after"] == ir.sliced_macs(result.ir.kept, MULTIPLE) < before
    assert result.stats["evaluations"] == scorer.evaluations
    trimmed = run_search(Minimize(), result.ir, scorer, 1.0, 200)
    assert sum(widths_of(trimmed.ir).values()) == NEED  # the fills not needed go again
    assert stored(trimmed.ir) == {"conv_a": 16, "conv_b": 32}
    assert trimmed.stats["one_minimal"] == 1


@pytest.mark.parametrize("budget", [0, 1, 3])
def test_out_of_budget_it_returns_a_faithful_mask_no_costlier_than_its_start(budget):
    ir, scorer = two_convs({"conv_a": 17, "conv_b": 23})
    result = run_search(RoundWidths(MULTIPLE), ir, scorer, 1.0, budget)
    assert result.stats.get("evaluations", 0) <= budget
    assert scorer.faithfulness(result.ir.kept, count=False) >= 1.0
    if budget == 0:  # nothing to do: unchanged, no stats
        assert not result.changed and result.stats == {}
    else:
        assert result.stats["stored_macs_after"] <= result.stats["stored_macs_before"]


def test_nothing_drops_when_every_width_is_needed():
    ir, scorer = two_convs({"conv_a": 32, "conv_b": 8})  # 40: conv_b 8 -> 0 is not tried
    result = run_search(RoundWidths(MULTIPLE), ir, scorer, 1.0, 100)
    assert widths_of(result.ir) == {"conv_a": 32, "conv_b": 8}
    assert result.stats["widths_dropped"] == 0


@pytest.mark.parametrize(
    ("objective", "align", "runs"),
    [("macs", 2, True), ("macs", 0, False), ("params", 2, False)],
)
def test_extract_rounds_widths_only_for_the_macs_objective_with_alignment(
    tmp_path, objective, align, runs
):
    task = write_task(tmp_path, kind="cnn", spec={"search": {"method": "greedy", "budget": 80}})
    result = api.extract(
        task["model"],
        task["spec"],
        tmp_path / "block.onnx",
        arch=task["arch"],
        objective=objective,
        align_channels=align,
    )
    passes = dict(result.passes)
    assert ("round-widths" in passes) is runs
    assert result.evaluations <= 80
    if runs:
        assert passes["round-widths"]["faithfulness"] >= 0.9
