"""Unit and dependency-group analysis (legoc/ir/analysis.py) on tiny traced models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from legoc.frontend.load import trace
from legoc.ir.core import IR, build_ir
from tests.helpers import TinyMLP, TinyResCNN


def analysed(model: nn.Module, row_shape: tuple[int, ...], outputs=None, scope=None) -> IR:
    """The IR of `model` (eval mode) on two random example rows."""
    example = torch.randn((2, *row_shape), generator=torch.Generator().manual_seed(0))
    return build_ir(trace(model.eval(), ["x"]), ["x"], {"x": example}, outputs=outputs, scope=scope)


def group_of(ir: IR, space: str, unit: int):
    return ir.groups[ir.analysis.unit_group[ir.spaces[space].offset + unit]]


def ids_of(ir: IR, space: str) -> np.ndarray:
    s = ir.spaces[space]
    return np.arange(s.offset, s.offset + s.size)


def read_by(ir: IR, layer: str):
    """What the Linear/Conv `layer` reads along its contracted axis (its ConsumerUse)."""
    node = ir.spaces[layer].node
    return next(use for use in ir.analysis.consumers if use.node == node)


class Head(nn.Module):
    """Linear(4 -> 5) -> `between` -> Linear(5 -> 3): whatever `between` does to the units."""

    def __init__(self, between, width: int = 5, b_in: int | None = None):
        super().__init__()
        self.a = nn.Linear(4, width)
        self.b = nn.Linear(b_in or width, 3)
        self.between = between

    def forward(self, x):
        return self.b(self.between(torch.relu(self.a(x))))


# -- independence and coupling ----------------------------------------------------------


def test_mlp_units_are_independent_one_group_per_unit():
    ir = analysed(TinyMLP(), (6,))
    for space in ("fc1", "fc2"):
        for unit in range(8):
            group = group_of(ir, space, unit)
            assert group.members == ((space, unit),)
            assert group.frozen is None and not group.dead and group.coupled_by == ()
    assert len(ir.groups) == 8 + 8 + 4
    assert len(ir.removable_groups()) == 16


def test_residual_add_couples_conv1_and_conv2_channel_by_channel():
    ir = analysed(TinyResCNN(), (1, 8, 8))
    for unit in range(6):
        group = group_of(ir, "conv1", unit)
        assert set(group.members) == {("conv1", unit), ("conv2", unit)}
        assert "add" in group.coupled_by
        assert group.frozen is None
        assert group_of(ir, "conv2", unit) is group
    for unit in range(10):  # fc1 units are not touched by the residual add
        assert group_of(ir, "fc1", unit).members == (("fc1", unit),)


def test_cat_along_the_unit_axis_shifts_positions():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(4, 3), nn.Linear(4, 2), nn.Linear(3 + 4 + 2, 2)

        def forward(self, x):
            return self.head(torch.cat([torch.relu(self.a(x)), x, torch.relu(self.b(x))], dim=-1))

    ir = analysed(Cat(), (4,))
    use = read_by(ir, "head")
    expected = np.concatenate([ids_of(ir, "a"), np.full(4, -1), ids_of(ir, "b")])
    np.testing.assert_array_equal(use.ids, expected)
    assert len(ir.removable_groups()) == 5  # a and b units stay prunable


def test_cat_along_another_axis_with_a_computed_tensor_freezes_its_operands():
    ir = analysed(Head(lambda h: torch.cat([h, torch.zeros(2, 5)], dim=0)[:2]), (4,))
    reason = "concatenated along another axis with a computed tensor"
    assert all(group_of(ir, "a", u).frozen == reason for u in range(5))


def test_cat_along_another_axis_with_the_same_units_keeps_them():
    ir = analysed(Head(lambda h: torch.cat([h, h], dim=0)[:2]), (4,))
    assert len(ir.removable_groups()) == 5  # the rows stack, each unit stays in its slot


def test_flatten_repeats_each_channel_id_h_times_w_at_the_consumer():
    class ConvFlat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 4 * 5, 2)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    ir = analysed(ConvFlat(), (1, 4, 5))
    np.testing.assert_array_equal(read_by(ir, "fc").ids, np.repeat(ids_of(ir, "conv"), 4 * 5))


def test_flatten_after_the_residual_add_reads_whole_coupled_groups():
    ir = analysed(TinyResCNN(), (1, 8, 8))
    use = read_by(ir, "fc1")  # fc1 reads flatten(pool(conv1 + conv2)), 4x4 positions each
    groups = ir.analysis.unit_group[use.ids]
    expected = np.repeat(ir.analysis.unit_group[ids_of(ir, "conv1")], 16)
    np.testing.assert_array_equal(groups, expected)


# -- freezing ----------------------------------------------------------------------------


def test_layer_norm_over_a_linears_features_keeps_them_units_read_by_the_next_linear():
    ir = analysed(Head(nn.LayerNorm(5)), (4,))
    assert len(ir.removable_groups()) == 5  # each feature alone (issue 15)
    assert ir.analysis.norm_readers == {"linear_1": "layer_norm"}


def test_a_norm_output_read_by_a_nonlinearity_restates_its_units():
    ir = analysed(Head(nn.Sequential(nn.LayerNorm(5), nn.GELU())), (4,))
    assert ir.spaces["between.0"].kind == "norm"  # the norm's output: a space of its own
    assert len(ir.removable_groups()) == 5
    for unit in range(5):
        assert set(group_of(ir, "a", unit).members) == {("a", unit), ("between.0", unit)}
    assert ir.analysis.norm_readers == {}  # its reader folds constants: no carriers


def test_a_norm_without_its_own_scale_read_by_a_nonlinearity_freezes_its_units():
    ir = analysed(Head(nn.Sequential(nn.LayerNorm(5, elementwise_affine=False), nn.GELU())), (4,))
    for unit in range(5):
        reason = group_of(ir, "a", unit).frozen
        assert reason is not None and "norm layer_norm read by between.1" in reason
    assert ir.removable_groups() == []


def test_units_reaching_the_output_are_frozen_and_unselected_ones_dead():
    ir = analysed(TinyResCNN(), (1, 8, 8), outputs=[0, 3])
    for unit in (0, 3):
        assert group_of(ir, "fc2", unit).frozen == "reaches the model output"
    for unit in (1, 2, 4):
        group = group_of(ir, "fc2", unit)
        assert group.frozen is None and group.dead
        assert group.index in ir.removable_groups()
    assert not any(g.dead for g in ir.groups if g.members[0][0] != "fc2")


def test_without_outputs_every_final_unit_is_frozen():
    ir = analysed(TinyMLP(), (6,))
    assert [group_of(ir, "head", u).frozen for u in range(4)] == ["reaches the model output"] * 4


@pytest.mark.parametrize(
    "scope, prunable", [(["fc2"], {"fc2"}), (["fc*"], {"fc1", "fc2"}), (["head"], set())]
)
def test_scope_globs_freeze_units_outside_scope(scope, prunable):
    ir = analysed(TinyMLP(), (6,), scope=scope)
    for space in ("fc1", "fc2"):
        for unit in range(8):
            frozen = group_of(ir, space, unit).frozen
            if space in prunable:
                assert frozen is None
            else:
                assert frozen == "outside scope"
    assert len(ir.removable_groups()) == 8 * len(prunable)


@pytest.mark.parametrize(
    "between, op",
    [
        (lambda h: torch.softmax(h, dim=-1), "softmax"),
        (lambda h: torch.sort(h, dim=-1)[0], "sort"),
        (lambda h: h.cumsum(-1), ".cumsum()"),
    ],
)
def test_an_unsupported_op_freezes_what_it_reads(between, op):
    ir = analysed(Head(between), (4,))
    for unit in range(5):
        assert group_of(ir, "a", unit).frozen == f"read by {op}, which legoc cannot slice through"
    assert ir.removable_groups() == []


def test_reducing_over_the_unit_axis_freezes():
    ir = analysed(Head(lambda h: h - h.mean(-1, keepdim=True)), (4,))
    assert group_of(ir, "a", 0).frozen == "reduced over the unit axis"


def test_a_product_with_an_input_dependent_tensor_freezes():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) * x)

    ir = analysed(Gate(), (4,))
    assert group_of(ir, "a", 0).frozen == "mul with an input-dependent tensor"


def test_units_read_through_an_attribute_are_not_dead():
    ir = analysed(Head(lambda h: h.T.T), (4,))
    for unit in range(5):
        group = group_of(ir, "a", unit)
        assert not group.dead, "b reads every unit of a (through .T.T)"


def test_pooling_a_linears_features_freezes_them():
    ir = analysed(Head(nn.MaxPool1d(2), width=6, b_in=3), (4,))
    for unit in range(6):
        assert group_of(ir, "a", unit).frozen is not None


# -- parameter accounting ------------------------------------------------------------------


def test_group_params_counted_by_hand_on_the_mlp():
    ir = analysed(TinyMLP(6, 8, 4), (6,))
    # fc1 unit: its weight row (6) + bias (1) + its column in fc2 (8 rows)
    assert {group_of(ir, "fc1", u).params for u in range(8)} == {6 + 1 + 8}
    # fc2 unit: row (8) + bias (1) + its column in head (4 rows)
    assert {group_of(ir, "fc2", u).params for u in range(8)} == {8 + 1 + 4}
    # head unit: row + bias only (nothing reads it)
    assert {group_of(ir, "head", u).params for u in range(4)} == {8 + 1}


def test_group_params_counted_by_hand_on_the_residual_cnn():
    ir = analysed(TinyResCNN(), (1, 8, 8), outputs=[0, 3])
    conv1 = 1 * 9 + 1 + 4  # row of conv1 (1 in-channel x 3x3), bias, bn1 (mean, var, w, b)
    conv2 = 6 * 9 + 1 + 4  # row of conv2 (6 in-channels x 3x3), bias, bn2
    conv1_in_conv2 = 6 * 9  # conv1's column in conv2 (6 out-channels x 3x3)
    in_fc1 = 16 * 10  # both share one column block of fc1: 4x4 positions x 10 rows
    assert group_of(ir, "conv1", 0).params == conv1 + conv2 + conv1_in_conv2 + in_fc1 == 287
    assert group_of(ir, "fc1", 0).params == 96 + 1 + 5
    assert group_of(ir, "fc2", 1).params == 10 + 1
