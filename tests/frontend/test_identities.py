"""Eval-mode identities (stochastic depth, drop path) are dropped at capture; a same-named op
that is not the identity stays (issue 15)."""

from __future__ import annotations

import torch
from torch import nn

from legoc.frontend.identities import drop_identities
from legoc.frontend.load import trace
from tests.ir.zoo.blocks import StochasticDepth, stochastic_depth

torch.fx.wrap("stochastic_depth")  # opaque when called from this module too, as torchvision's


class Residual(nn.Module):
    def __init__(self, training_flag: bool):
        super().__init__()
        self.linear, self.flag = nn.Linear(4, 4), training_flag

    def forward(self, x):
        return x + stochastic_depth(self.linear(x), 0.5, "row", self.flag)


def _targets(gm) -> list[str]:
    return [getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes]


def test_stochastic_depth_in_eval_is_removed_and_the_graph_computes_the_same():
    model = Residual(training_flag=False).eval()
    gm = trace(model, ["x"])
    assert "stochastic_depth" not in _targets(gm)
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_a_same_named_op_that_is_not_the_identity_stays():
    gm = torch.fx.symbolic_trace(Residual(training_flag=True))  # drops rows: random
    assert "stochastic_depth" in _targets(gm)
    assert drop_identities(gm) == 0
    assert "stochastic_depth" in _targets(gm)


def test_a_stochastic_depth_module_in_eval_is_removed():
    model = nn.Sequential(nn.Linear(4, 4), StochasticDepth(0.3, "batch")).eval()
    gm = trace(model, ["x"])
    assert "stochastic_depth" not in _targets(gm)
