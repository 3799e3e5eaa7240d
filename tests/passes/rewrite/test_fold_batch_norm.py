"""`fold-batch-norm`: an inference-mode BatchNorm right after a Conv/Linear merges into it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from legoc.ir.analysis import get_attr_tensor
from legoc.passes.rewrite import FoldAblations, FoldBatchNorm, SliceUnits
from tests.helpers import assert_float_close
from tests.passes.helpers import (
    assert_golden,
    case,
    check_weights_fit_inputs,
    dangling,
    fresh_inputs,
    groups_for,
    masked,
    masked_oracle,
    model_ir,
    random_ablation,
)


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from (0, 1): an identity-like BatchNorm
    would fold into almost nothing and prove little."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen))
                module.running_var.copy_(0.2 + 2 * torch.rand(n, generator=gen))
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    module.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


class ConvBN(nn.Module):
    """Every BatchNorm right after its producer: a conv with a bias, a conv without one (the
    fold gives it one) under a BatchNorm without affine parameters, a 2-D Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(2, affine=False)
        self.fc = nn.Linear(2 * 3 * 3, 4)
        self.bn3 = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(torch.relu(self.bn3(self.fc(torch.flatten(x, 1)))))


class Unfoldable(nn.Module):
    """BatchNorms the fold must leave alone: after a conv whose output is read twice, after a
    ReLU, and a BatchNorm1d over a Linear's positions (N, C, L) rather than its features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn_shared = nn.BatchNorm2d(2)
        self.bn_relu = nn.BatchNorm2d(2)
        self.fc = nn.Linear(25, 6)
        self.bn_positions = nn.BatchNorm1d(2)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        y = self.conv(x)
        y = self.bn_relu(torch.relu(self.bn_shared(y) + y))
        y = self.bn_positions(self.fc(torch.flatten(y, 2)))
        return self.head(torch.flatten(y, 1))


class PooledConvBN(nn.Module):
    """A removed conv1 channel reaches conv2 through a zero-padded average pool, so its value
    differs at the borders: fold-ablations stores conv2's constant as a position map (not a
    ones-kernel), which the fold must scale too."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)  # counts the padding: borders shrink
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 5 * 5, 2)

    def forward(self, x):
        x = self.conv2(self.pool(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(torch.relu(self.bn(x)), 1))


def ir_of(model_class: type[nn.Module]):
    torch.manual_seed(0)
    return model_ir(randomise_batch_norms(model_class()), torch.randn(2, 1, 5, 5))


def run(gm: torch.fx.GraphModule, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(gm).to(dtype)(x.to(dtype))


def batch_norms(ir) -> list[str]:
    return [n.name for n in ir.gm.graph.nodes if n.target is F.batch_norm]


def test_golden_before_and_after():
    ir = ir_of(ConvBN)
    assert_golden(ir.text(), "conv_bn.txt")
    # structure: no batch_norm left, conv2 reads a new conv2.legoc_bias; params 202 -> 172:
    # the BatchNorms' 32 weights, biases and statistics go, conv2's 2-value bias comes
    assert_golden(FoldBatchNorm().run(ir).ir.text(), "conv_bn_folded.txt")


def test_folded_model_computes_the_unfolded_one():
    ir = ir_of(ConvBN)
    folded = FoldBatchNorm().run(ir).ir
    x = fresh_inputs(ir)
    assert_float_close(run(folded.gm, x), run(ir.gm, x))


def test_stats_and_a_second_run_changes_nothing():
    ir = ir_of(ConvBN)
    result = FoldBatchNorm().run(ir)
    assert result.stats == {"batch_norms_folded": 3}
    assert result.changed
    again = FoldBatchNorm().run(result.ir)
    assert again.stats == {"batch_norms_folded": 0}
    assert not again.changed
    assert again.ir.text() == result.ir.text()


def test_invariants_after_the_fold():
    ir = ir_of(ConvBN)
    folded = FoldBatchNorm().run(ir).ir
    assert batch_norms(folded) == []
    assert dangling(folded) == []
    check_weights_fit_inputs(folded)
    assert len(batch_norms(ir)) == 3  # the input IR is left alone


def test_hand_computed_conv_without_bias():
    """conv2 has no bias and bn2 no affine parameters: W' = W / std, b' = -mean / std."""
    ir = ir_of(ConvBN)
    folded = FoldBatchNorm().run(ir).ir.gm
    mean, var = (get_attr_tensor(ir.gm, f"bn2.running_{s}") for s in ("mean", "var"))
    std = (var + 1e-5).sqrt()  # eps of nn.BatchNorm2d
    weight = get_attr_tensor(ir.gm, "conv2.weight").detach()
    assert_float_close(
        get_attr_tensor(folded, "conv2.weight").detach(), weight / std[:, None, None, None]
    )
    assert_float_close(get_attr_tensor(folded, "conv2.legoc_bias").detach(), -mean / std)


def test_batch_norms_that_do_not_follow_a_lone_producer_stay():
    ir = ir_of(Unfoldable)
    result = FoldBatchNorm().run(ir)
    assert result.stats == {"batch_norms_folded": 0}
    assert not result.changed
    assert result.ir.text() == ir.text()
    assert len(batch_norms(result.ir)) == 3


def test_after_fold_ablations_and_slicing_on_the_residual_cnn():
    """In its pipeline place: both BatchNorms fold, bn2 through conv2's folded constant
    (a ones-kernel), and the block still computes the masked model."""
    ir = case("cnn")
    sliced = SliceUnits().run(FoldAblations().run(ir).ir).ir
    result = FoldBatchNorm().run(sliced)
    assert result.stats == {"batch_norms_folded": 2}
    assert batch_norms(result.ir) == []
    x = fresh_inputs(ir)
    assert_float_close(
        run(result.ir.gm, x, torch.float64), run(masked_oracle(ir), x, torch.float64)
    )


def test_a_stored_constant_map_is_scaled_with_the_producer():
    torch.manual_seed(0)
    model = randomise_batch_norms(PooledConvBN())
    ir = model_ir(model, torch.randn(2, 2, 5, 5))
    values = random_ablation(ir, 0)
    values["conv1"] = torch.tensor([0.5, 1.0, 1.5, 2.0])  # > 0: survives the ReLU
    ablated = masked(ir, groups_for(ir, {"conv1": [1, 3]}), values)
    folded_ablations = FoldAblations().run(ablated).ir
    assert "conv2_legoc_folded" in folded_ablations.text()  # the map, not a ones-kernel
    result = FoldBatchNorm().run(folded_ablations)
    assert result.stats == {"batch_norms_folded": 1}
    x = fresh_inputs(ir)
    assert_float_close(
        run(result.ir.gm, x, torch.float64), run(masked_oracle(ablated), x, torch.float64)
    )


@pytest.mark.parametrize("model_class", [ConvBN, Unfoldable])
def test_the_input_ir_is_not_modified(model_class):
    ir = ir_of(model_class)
    before = ir.text()
    weights = {k: v.clone() for k, v in ir.gm.state_dict().items()}
    FoldBatchNorm().run(ir)
    assert ir.text() == before
    for name, value in ir.gm.state_dict().items():
        torch.testing.assert_close(value, weights[name], atol=0, rtol=0)
