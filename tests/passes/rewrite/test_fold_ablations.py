"""`fold-ablations`: removed units' constants move into the readers; their columns become zero."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from legoc.passes.rewrite import FoldAblations
from tests.helpers import assert_float_close
from tests.passes.helpers import (
    ATOL,
    CASES,
    CNN_UNITS,
    MLP_UNITS,
    assert_golden,
    case,
    cnn_ablation,
    fresh_inputs,
    groups_for,
    masked,
    masked_oracle,
    max_abs_diff,
    model_ir,
    padded_convs_ir,
    random_ablation,
    tiny_ir,
)


def fold(ir):
    """Fold once; return the result and the fresh-input difference to the masked oracle."""
    result = FoldAblations().run(ir)
    return result, max_abs_diff(result.ir, masked_oracle(ir), fresh_inputs(ir))


def test_golden_before_and_after_on_the_residual_cnn():
    ir = tiny_ir("cnn", [0, 3])
    before = masked(ir, groups_for(ir, CNN_UNITS), cnn_ablation(ir))
    assert_golden(before.text(), "cnn_masked.txt")
    # structure: one constant map after conv2 (zero padding), everything else folds to biases
    assert_golden(FoldAblations().run(before).ir.text(), "cnn_folded.txt")


def test_stats_on_the_residual_cnn_and_a_second_run_changes_nothing():
    result, _ = fold(case("cnn"))
    # readers of removed units: conv2 (conv1's channels), fc1 (the residual sum), fc2 (fc1 unit
    # 2); fc2's removed unit 1 is read by nobody. Only conv2 is zero-padded: one constant map.
    assert result.stats == {"consumers_folded": 3, "constants_added": 1}
    assert result.changed
    again = FoldAblations().run(result.ir)
    assert again.stats == {"consumers_folded": 0, "constants_added": 0}
    assert not again.changed
    assert again.ir.text() == result.ir.text()


def test_mlp_fold_is_the_hand_computed_bias_shift():
    ir = case("mlp")
    result = FoldAblations().run(ir)
    assert result.stats == {"consumers_folded": 2, "constants_added": 0}
    gm, folded = ir.gm, result.ir.gm
    fc1_gone, fc2_gone = MLP_UNITS["fc1"], MLP_UNITS["fc2"]
    with torch.no_grad():
        # a removed fc1 unit reaches fc2 as relu(c); fc2 adds W[:, gone] @ relu(c) to its bias
        shift2 = gm.fc2.weight[:, fc1_gone] @ torch.relu(ir.ablation["fc1"][fc1_gone])
        shift3 = gm.head.weight[:, fc2_gone] @ torch.relu(ir.ablation["fc2"][fc2_gone])
    assert_float_close(folded.fc2.bias, gm.fc2.bias + shift2)
    assert_float_close(folded.head.bias, gm.head.bias + shift3)
    assert not folded.fc2.weight[:, fc1_gone].any() and not folded.head.weight[:, fc2_gone].any()
    kept = [i for i in range(8) if i not in fc1_gone]
    torch.testing.assert_close(folded.fc2.weight[:, kept], gm.fc2.weight[:, kept], atol=0, rtol=0)
    assert ir.gm.fc2.weight[:, fc1_gone].any()  # the input IR is left alone


def test_zero_padding_makes_the_fold_add_a_non_uniform_constant_map():
    ir = case("padded")
    result, diff = fold(ir)
    assert result.stats == {"consumers_folded": 1, "constants_added": 1}
    assert diff <= ATOL
    # stored as a 1-input-channel kernel applied to ones (C_out*k*k floats, not C_out*H*W)
    kernel = result.ir.gm.conv2.legoc_folded_kernel
    assert tuple(kernel.shape) == (ir.gm.conv2.weight.shape[0], 1, 3, 3)
    with torch.no_grad():
        constant = F.conv2d(torch.ones(1, 1, 5, 5), kernel, None, padding=1)
    # by hand: conv2 applied to the removed channels' constants alone (its bias is folded apart)
    removed = [1, 3]
    x = torch.zeros(1, 4, 5, 5)
    x[:, removed] = ir.ablation["conv1"][removed].reshape(1, -1, 1, 1)
    with torch.no_grad():
        expected = F.conv2d(x, ir.gm.conv2.weight, None, padding=1)
    assert_float_close(constant, expected)
    assert (constant[0, :, 0, 0] - constant[0, :, 2, 2]).abs().max() > 1e-3  # border != centre


def test_constants_that_are_zero_after_the_relu_fold_into_nothing_spatial():
    ir = padded_convs_ir()
    values = random_ablation(ir, 0)
    values["conv1"] = torch.tensor([-1.0, -2.0, -0.5, -3.0])  # relu(c) == 0: no contribution
    result, diff = fold(masked(ir, groups_for(ir, {"conv1": [1, 3]}), values))
    assert result.stats == {"consumers_folded": 1, "constants_added": 0}
    assert diff <= ATOL


def test_a_reader_without_bias_gets_one_holding_the_folded_constant():
    class NoBias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 5), torch.nn.Linear(5, 3, bias=False)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    ir = model_ir(NoBias().eval(), torch.randn(2, 4))
    values = {"a": torch.tensor([1.0, -1.0, 2.0, 0.5, 3.0]), "b": torch.zeros(3)}
    removed = [0, 2]
    result, diff = fold(masked(ir, groups_for(ir, {"a": removed}), values))
    assert result.stats == {"consumers_folded": 1, "constants_added": 0}
    assert diff <= ATOL
    with torch.no_grad():
        expected = ir.gm.b.weight[:, removed] @ torch.tensor([1.0, 2.0])
    assert_float_close(result.ir.gm.b.legoc_bias, expected)


def test_missing_ablation_values_are_an_error():
    ir = tiny_ir("mlp")
    bare = ir.with_kept(ir.mask_for(groups_for(ir, MLP_UNITS)))
    with pytest.raises(ValueError, match="no ablation values"):
        FoldAblations().run(bare)


def test_nothing_removed_is_no_change():
    ir = tiny_ir("mlp")
    result = FoldAblations().run(ir)
    assert not result.changed
    assert result.ir.text() == ir.text()


@pytest.mark.parametrize("name", CASES)
def test_folded_graph_equals_the_masked_model_on_fresh_inputs(name):
    _, diff = fold(case(name))
    assert diff <= ATOL
