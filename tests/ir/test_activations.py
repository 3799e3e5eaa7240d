"""Element-wise activations map a removed unit's constant to a constant, so the units between
two layers stay prunable through every one of them (issue 15: hardsigmoid, mish, ... froze)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from legoc.ir.masking import masked_model
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from tests.helpers import assert_float_close
from tests.passes.helpers import masked, model_ir, random_ablation

ACTIVATIONS = [
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Mish,
    nn.Softplus,
    nn.SELU,
    nn.CELU,
    nn.LogSigmoid,
    nn.Softsign,
    nn.AlphaDropout,
]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a.__name__)
def test_units_through_the_activation_are_prunable_and_slice_exactly(activation):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), activation(), nn.Linear(8, 3)).eval()
    ir = model_ir(model, torch.randn(4, 5))
    hidden = [g for g in ir.groups if any(name == "0" for name, _ in g.members)]
    assert len(hidden) == 8 and all(g.frozen is None for g in hidden), [g.frozen for g in hidden]
    removed = [g.index for g in hidden][::2]
    rationale = masked(ir, removed, random_ablation(ir, 1))
    block = parse_pipeline(BLOCK_PIPELINE).run(rationale).ir
    x = torch.randn(16, 5)
    with torch.no_grad():
        assert_float_close(block.gm(x), masked_model(rationale)(x))
    assert block.gm.get_parameter("0.weight").shape[0] == 8 - len(removed)
