"""`dce`: nodes nobody reads go, and so do the parameters only they used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from legoc.passes.base import Pipeline
from legoc.passes.rewrite import DeadCodeElimination, FoldAblations, SliceUnits
from tests.helpers import assert_float_close
from tests.passes.helpers import (
    ATOL,
    CASES,
    assert_golden,
    case,
    dangling,
    fresh_inputs,
    masked_oracle,
    max_abs_diff,
    model_ir,
    tiny_ir,
)


def rewrite(ir):
    """The whole rewrite pipeline; returns the dce result and its difference to the oracle."""
    sliced = SliceUnits().run(FoldAblations().run(ir).ir).ir
    result = DeadCodeElimination().run(sliced)
    return result, max_abs_diff(result.ir, masked_oracle(ir), fresh_inputs(ir))


def test_golden_before_and_after_on_the_planted_noise_branch():
    sliced = SliceUnits().run(FoldAblations().run(case("planted")).ir).ir
    assert_golden(sliced.text(), "planted_sliced.txt")  # noise still computed, read by nobody
    assert_golden(DeadCodeElimination().run(sliced).ir.text(), "planted_dce.txt")


def test_stats_on_the_planted_model_and_a_second_run_changes_nothing():
    result, diff = rewrite(case("planted"))
    # noise.weight, noise.bias, its linear and its relu; 6 x 4 weights + 6 biases
    assert result.stats == {"nodes_removed": 4, "tensors_removed": 2, "params_removed": 30}
    assert "noise" not in result.ir.spaces
    assert not hasattr(result.ir.gm, "noise")
    assert diff <= ATOL
    again = DeadCodeElimination().run(result.ir)
    assert again.stats == {"nodes_removed": 0, "tensors_removed": 0, "params_removed": 0}
    assert not again.changed


def test_a_traced_model_has_nothing_dead():
    ir = tiny_ir("cnn", [0, 3])
    result = DeadCodeElimination().run(ir)
    assert not result.changed
    assert result.ir.text() == ir.text()


def test_the_whole_conv_stem_goes_when_fc1_became_a_constant():
    result, diff = rewrite(case("cnn-all-convs"))
    assert diff <= ATOL
    # before dce: 1463 source + the fold's 6x1x3x3 ones-kernel + two constants (conv2's
    # 6x8x8 map, fc1's 10)
    assert result.stats["params_removed"] == 1463 + 54 + 384 + 10 - (10 + 55)
    assert result.ir.param_count() == 10 + 55
    assert sorted(result.ir.spaces) == ["fc2"]


@pytest.mark.parametrize("name", CASES)
def test_after_dce_every_node_but_the_output_has_a_user(name):
    result, _ = rewrite(case(name))
    assert dangling(result.ir) == []
    used = {n.target for n in result.ir.gm.graph.nodes if n.op == "get_attr"}
    tensors = [name for name, _ in result.ir.gm.named_parameters()]
    tensors += [name for name, _ in result.ir.gm.named_buffers()]
    assert set(tensors) <= used


@pytest.mark.parametrize("name", CASES)
def test_fold_slice_dce_equals_the_masked_model_on_fresh_inputs(name):
    _, diff = rewrite(case(name))
    assert diff <= ATOL


def test_the_pipeline_reports_every_pass_in_order():
    pipeline = Pipeline((FoldAblations(), SliceUnits(), DeadCodeElimination()))
    ran = pipeline.run(case("planted"))
    block, reports = ran.ir, ran.reports
    assert [name for name, _ in reports] == ["fold-ablations", "slice-units", "dce"]
    assert reports[2][1]["params_removed"] == 30
    assert block.param_count() == 51


def test_parameters_of_modules_called_whole_are_kept():
    class WithGroupNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.fc = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.norm(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = WithGroupNorm().eval()
    ir = model_ir(model, torch.randn(2, 1, 6, 6))
    x = torch.randn(5, 1, 6, 6)
    result = DeadCodeElimination().run(ir)
    with torch.no_grad():
        assert_float_close(result.ir.gm(x), model(x))
