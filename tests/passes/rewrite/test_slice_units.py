"""`slice-units`: removed units' rows, per-unit parameters and reader columns physically go."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from legoc.ir.core import propagate_shapes
from legoc.passes.rewrite import DeadCodeElimination, FoldAblations, SliceUnits
from tests.passes.helpers import (
    ATOL,
    CASES,
    assert_golden,
    case,
    check_weights_fit_inputs,
    fresh_inputs,
    groups_for,
    groups_of,
    masked,
    masked_oracle,
    max_abs_diff,
    mean_ablation,
    model_ir,
    random_ablation,
    tiny_ir,
)


def fold_and_slice(ir):
    """Fold then slice; return the slice result and its fresh-input difference to the oracle."""
    result = SliceUnits().run(FoldAblations().run(ir).ir)
    return result, max_abs_diff(result.ir, masked_oracle(ir), fresh_inputs(ir))


def test_golden_before_and_after_on_the_residual_cnn():
    folded = FoldAblations().run(case("cnn")).ir
    assert_golden(folded.text(), "cnn_folded.txt")
    # conv1/conv2 channels 1 and 4 leave conv weights (rows and columns), both BatchNorms,
    # the folded constant map and fc1's columns (16 per channel after flatten); fc1 loses
    # unit 2, fc2 its unselected unit 1, and the output selection (0, 3) becomes (0, 2)
    assert_golden(SliceUnits().run(folded).ir.text(), "cnn_sliced.txt")


def test_stats_on_the_residual_cnn_and_a_second_run_changes_nothing():
    result, _ = fold_and_slice(case("cnn"))
    # by hand: two coupled conv groups 2 * 287, less the conv2 weights counted twice (rows 1, 4
    # x columns 1, 4 x 3x3 = 36); fc1 unit 2: 102 less its 32 columns already gone; fc2 unit
    # 1: 11 less its fc1-2 column; plus 2 output channels of the 6x1x3x3 ones-kernel the fold
    # added
    assert result.stats == {
        "units_sliced": 2 + 2 + 1 + 1,
        "readers_made_constant": 0,
        "shapes_rewritten": 0,
        "params_removed": (2 * 287 - 36) + (102 - 32) + (11 - 1) + 2 * 9,
    }
    again = SliceUnits().run(result.ir)
    assert again.stats == {
        "units_sliced": 0,
        "readers_made_constant": 0,
        "shapes_rewritten": 0,
        "params_removed": 0,
    }
    assert not again.changed


def test_stats_on_the_mlp():
    result, diff = fold_and_slice(case("mlp"))
    # fc1 units 0, 1: rows 2 * (6 + 1), columns in fc2 2 * 8; fc2 unit 3: row 8 + 1 and its
    # column in head 4; fc2's row 3 lost its columns 0 and 1 already (counted once)
    assert result.stats == {
        "units_sliced": 3,
        "readers_made_constant": 0,
        "shapes_rewritten": 0,
        "params_removed": 2 * 15 + 13 - 2,
    }
    assert result.ir.param_count() == 164 - 41
    assert diff <= ATOL


def test_removing_the_planted_noise_branch_drops_its_cat_operand():
    result, diff = fold_and_slice(case("planted"))
    # head loses its 6 noise columns (3 rows); the noise rows stay for dce to delete
    assert result.stats == {
        "units_sliced": 6,
        "readers_made_constant": 0,
        "shapes_rewritten": 1,
        "params_removed": 6 * 3,
    }
    # a concatenation left with one operand is that operand
    assert not any(n.target is torch.cat for n in result.ir.gm.graph.nodes)
    head = next(
        n
        for n in result.ir.gm.graph.nodes
        if n.args
        and getattr(n.args[0], "name", "") == "relu"
        and n.target is torch.nn.functional.linear
    )
    assert head.args[1].target == "head.weight"
    assert diff <= ATOL


def test_removing_all_of_conv1_and_conv2_turns_fc1_into_a_constant():
    result, diff = fold_and_slice(case("cnn-all-convs"))
    assert diff <= ATOL
    # conv2 and fc1 read nothing but removed units: both become their (folded) constant
    assert result.stats["readers_made_constant"] == 2
    assert result.stats["units_sliced"] == 12
    block = DeadCodeElimination().run(result.ir).ir
    targets = [n.target for n in block.gm.graph.nodes if n.op == "call_function"]
    assert torch.nn.functional.conv2d not in targets
    # what is left: fc1's constant (10), relu, fc2 (5 x 10 + 5), the output selection
    assert block.param_count() == 10 + 55
    assert max_abs_diff(block, masked_oracle(case("cnn-all-convs")), fresh_inputs(block)) <= ATOL


def test_removing_every_fc1_unit_turns_fc2_into_a_constant():
    ir = case("cnn-all-fc1")
    result, diff = fold_and_slice(ir)
    assert diff <= ATOL
    assert result.stats["readers_made_constant"] == 1
    assert DeadCodeElimination().run(result.ir).ir.param_count() == 5


@pytest.mark.parametrize("name", CASES)
def test_after_slicing_every_weight_fits_its_input(name):
    ir = case(name)
    result, _ = fold_and_slice(ir)
    check_weights_fit_inputs(result.ir)
    # shape propagation again, on a batch size never seen: every op accepts its inputs
    x = fresh_inputs(ir, n=3)
    propagate_shapes(result.ir.gm, {"x": x}, ["x"])
    result.ir.refresh()
    check_weights_fit_inputs(result.ir)
    # each partially kept space has exactly its kept units left
    for space, mask in ir.kept.items():
        if space in result.ir.spaces and 0 < mask.sum() < len(mask):
            assert result.ir.spaces[space].size == int(mask.sum())


@pytest.mark.parametrize("name", CASES)
def test_fold_then_slice_equals_the_masked_model_on_fresh_inputs(name):
    _, diff = fold_and_slice(case(name))
    assert diff <= ATOL


# -- literal shapes on unit paths -----------------------------------------------------------


class Viewed(nn.Module):
    """conv -> relu -> a literal view -> Linear/mean: the view's sizes must follow the slicing."""

    def __init__(self, view):
        super().__init__()
        self.conv, self.view = nn.Conv2d(1, 6, 3, padding=1), view
        self.fc = nn.Linear(96 if view is not Viewed.per_channel else 6, 3)

    @staticmethod
    def per_channel(h):
        return h.view(h.size(0), 6, -1).mean(-1)

    def forward(self, x):
        return self.fc(self.view(torch.relu(self.conv(x))))


def sliced_viewed(view) -> tuple[dict, float]:
    torch.manual_seed(0)
    ir = model_ir(Viewed(view).eval(), torch.randn(2, 1, 4, 4))
    ir = masked(ir, groups_for(ir, {"conv": [0, 3]}), random_ablation(ir, 0))
    return fold_and_slice(ir)


@pytest.mark.parametrize(
    "view",
    [
        lambda h: h.view(h.size(0), -1),
        lambda h: h.view(-1, 96),
        lambda h: h.reshape(h.shape[0], 96),
    ],
    ids=["view-size-minus-1", "view-minus-1-literal", "reshape-literal"],
)
def test_literal_flattening_views_follow_the_slicing(view):
    result, diff = sliced_viewed(view)
    assert diff <= ATOL
    assert result.stats["units_sliced"] == 2


def test_a_minus_one_after_the_unit_axis_survives_the_rewrite():
    _result, diff = sliced_viewed(Viewed.per_channel)
    assert diff <= ATOL


def test_output_selection_after_a_frozen_op():
    class LogSoftmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x):
            return torch.log_softmax(self.b(torch.relu(self.a(x))), -1)

    torch.manual_seed(0)
    ir = model_ir(LogSoftmax().eval(), torch.randn(2, 4), outputs=[0, 2])
    _, diff = fold_and_slice(masked(ir, groups_for(ir, {"a": [1]}), random_ablation(ir, 0)))
    assert diff <= ATOL


# -- properties ------------------------------------------------------------------------------


@functools.cache
def base_ir(kind: str):
    return tiny_ir(kind, [0, 3] if kind == "cnn" else None)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["cnn", "mlp"]), seed=st.integers(0, 2**16))
def test_random_masks_give_a_block_equal_to_the_masked_model(data, kind, seed):
    ir = base_ir(kind)
    removed = data.draw(st.sets(st.sampled_from(ir.removable_groups())), label="removed")
    masked_ir = masked(ir, sorted(removed), random_ablation(ir, seed))
    block = DeadCodeElimination().run(SliceUnits().run(FoldAblations().run(masked_ir).ir).ir).ir
    assert max_abs_diff(block, masked_oracle(masked_ir), fresh_inputs(ir, seed=seed)) <= ATOL
    if kind == "mlp":  # no constant maps: never larger than the source
        assert block.param_count() <= ir.param_count()


def test_removing_one_residual_group_never_grows_the_block():
    ir = base_ir("cnn")
    masked_ir = masked(ir, groups_for(ir, {"conv1": [0]}), mean_ablation(ir, "cnn", [0, 3]))
    block = DeadCodeElimination().run(SliceUnits().run(FoldAblations().run(masked_ir).ir).ir).ir
    assert block.param_count() <= ir.param_count()


class HeadViews(nn.Module):
    """Channels viewed as (heads, head_dim) and back with a literal head count: the view's
    sizes must follow the slicing in every calling form (issue 15: OPT, ViT, DeBERTa-v2)."""

    def __init__(self, split):
        super().__init__()
        self.proj, self.out, self.split = nn.Linear(4, 8), nn.Linear(8, 3), split

    def forward(self, x):
        h = torch.relu(self.split(self.proj(x)))
        return self.out(h.reshape(h.size(0), 3, 8)).mean(1)


@pytest.mark.parametrize(
    "split",
    [
        lambda h: h.view(h.size(0), 3, 2, 4),
        lambda h: h.view(-1, 3, 2, 4),
        lambda h: h.view((h.shape[0], 3, 2, 4)),
        lambda h: torch.reshape(h, (-1, 3, 2, 4)),
        lambda h: torch.reshape(h, [h.size(0), -1, 2, 4]),
        lambda h: h.reshape(shape=(h.size(0), 3, 2, -1)),
    ],
    ids=["varargs-size", "varargs-minus-1", "tuple", "torch-tuple", "torch-list", "kwarg"],
)
def test_a_literal_head_count_follows_the_slicing_in_every_calling_form(split):
    torch.manual_seed(0)
    ir = model_ir(HeadViews(split).eval(), torch.randn(2, 3, 4))
    head = groups_for(ir, {"proj": [0]})
    assert len(ir.groups[head[0]].members) == 4  # a head's channels are one unit
    result, diff = fold_and_slice(masked(ir, head, random_ablation(ir, 0)))
    assert diff <= ATOL
    assert result.stats["units_sliced"] == 4 and result.stats["shapes_rewritten"] >= 1


class FusedParts(nn.Module):
    """One Linear(4 -> 9) read as parts: `h[..., :3]` (a query), a `chunk` of the next four
    (gate/up, coupled by their product), and `h[:, 7:]` taken through stack and `unbind`."""

    def __init__(self):
        super().__init__()
        self.fused, self.head = nn.Linear(4, 9), nn.Linear(3 + 2 + 2, 3)

    def forward(self, x):
        h = self.fused(x)
        gate, up = h[:, 3:7].chunk(2, dim=-1)
        tail = torch.stack([h[:, 7:], h[:, 7:] * 2]).unbind(0)[1]
        return self.head(torch.cat([torch.relu(h[..., :3]), torch.relu(gate) * up, tail], -1))


@pytest.mark.parametrize("seed", range(3))
def test_fused_parts_taken_by_slicing_chunk_and_unbind_slice_exactly(seed):
    ir = model_ir(FusedParts(), torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    fused = [g for g in groups_of(ir, "fused") if ir.groups[g].frozen is None]
    assert len(fused) == 3 + 2  # gate/up rows coupled in pairs; stack (unknown) freezes the tail
    removed = sorted(torch.randperm(len(fused), generator=torch.Generator().manual_seed(seed))[:3])
    ir = masked(ir, [fused[int(i)] for i in removed], random_ablation(ir, seed))
    result, diff = fold_and_slice(ir)
    assert diff <= ATOL
    assert result.stats["shapes_rewritten"] >= 1
    check_weights_fit_inputs(result.ir)
