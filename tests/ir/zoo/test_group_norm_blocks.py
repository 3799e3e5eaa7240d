"""Group norm over conv channels (issue 15, norms over units): a ResNet block with GroupNorm
before its ReLUs (whole groups are the units), and ConvNeXt-style blocks whose GroupNorm (1 or
4 groups) is read by 1x1 convs (each channel a unit: the statistics fold the removed channels'
constants and the readers get carriers). Masked = sliced on random kept sets, export parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from legoc.export.writer import PARITY_TOLERANCE, export_block
from legoc.ir.group_norm import carried_group_norm
from legoc.ir.masking import masked_model
from legoc.passes.rewrite import BLOCK_PIPELINE, rewrite_pipeline
from legoc.passes.rewrite.fold_ablations import FoldAblations
from legoc.passes.rewrite.slice_units import SliceUnits
from legoc.task.data import Split
from tests.helpers import assert_float_close, float_steps
from tests.ir.zoo.test_norm_blocks import (
    check_parity,
    check_sliced,
    frozen,
    groups_of,
    ir_of,
    removable,
    rows,
    run64,
)


class ResNetGN(nn.Module):
    """A ResNet basic block with GroupNorm in place of BatchNorm (as in group-norm ResNets)."""

    def __init__(self, c: int = 16, groups: int = 4):
        super().__init__()
        self.stem, self.gn0 = nn.Conv2d(3, c, 3, padding=1), nn.GroupNorm(groups, c)
        self.conv1, self.gn1 = nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c)
        self.conv2, self.gn2 = nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = torch.relu(self.gn0(self.stem(x)))
        h = torch.relu(self.gn1(self.conv1(x)))
        x = torch.relu(self.gn2(self.conv2(h)) + x)
        return self.head(x.mean((2, 3)))


def test_resnet_group_norm_block_couples_each_group_and_slices_whole_groups(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(ResNetGN(), {"x": rows(2, 3, 8, 8)})
    for space in ("stem", "conv1", "conv2"):  # 16 channels, 4 per group: 4 units each
        assert [len(ir.groups[g].members) for g in groups_of(ir, space)] in ([4] * 4, [8] * 4)
    assert removable(ir, "stem", "conv1", "conv2")
    assert frozen(ir, "head") == ["reaches the model output"] * 3
    block = check_sliced(ir, [rows(5, 3, 8, 8, seed=3)], seeds=(0, 1, 2))
    widths = {n.args[1] for n in block.gm.graph.nodes if n.target is F.group_norm}
    assert widths and max(widths) < 4  # the sliced norms hold the groups left, 4 channels each
    check_parity(ir, {"x": rows(16, 3, 8, 8, seed=4)}, tmp_path)


def test_group_norm_read_by_a_relu_is_exact_only_for_whole_groups():
    """Why a channel cannot go alone: held at a constant before the norm, it still varies with
    the input after norm + relu (its group's statistics do); with its whole group held, not."""
    torch.manual_seed(0)
    model = ResNetGN().eval()
    x = rows(64, 3, 8, 8, seed=5)
    with torch.no_grad():
        h = model.conv1(torch.relu(model.gn0(model.stem(x))))
        h[:, 0] = 0.5
        alone = torch.relu(model.gn1(h))[:, 0]
        h[:, 1:4] = torch.tensor([0.1, -0.3, 0.7]).reshape(1, 3, 1, 1)
        whole = torch.relu(model.gn1(h))[:, :4]
    assert float((alone - alone[:1]).abs().max()) > 1000 * float_steps(alone)
    assert_float_close(whole, whole[:1].expand_as(whole))


class ConvNeXtGN(nn.Module):
    """A ConvNeXt block with GroupNorm in place of LayerNorm2d (1 group in some variants) and
    1x1 convs for its MLP: the norm's readers are convs."""

    def __init__(self, c: int = 8, groups: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.GroupNorm(groups, c)
        self.pw1, self.pw2 = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1))
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.layer_scale * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("groups", [1, 4])
def test_convnext_group_norm_channels_are_units_and_slice_exactly(groups, tmp_path):
    torch.manual_seed(0)
    c = 16 if groups > 1 else 8
    ir = ir_of(ConvNeXtGN(c, groups), {"x": rows(2, 3, 16, 16)})
    assert len(groups_of(ir, "stem")) == c  # the stream, channel by channel
    assert len(groups_of(ir, "pw1")) == 4 * c
    assert removable(ir, "stem", "dw", "pw1", "pw2")
    assert list(ir.analysis.norm_readers.values()) == ["group_norm"]
    block = check_sliced(ir, [rows(5, 3, 16, 16, seed=3)], seeds=(0, 1, 2))
    assert any(n.target is carried_group_norm for n in block.gm.graph.nodes)
    check_parity(ir, {"x": rows(16, 3, 16, 16, seed=4)}, tmp_path)


class NormedConvsGN(nn.Module):
    """conv -> GroupNorm(4) -> zero-padded conv: per-channel constants, so each group's
    removed channels reach the reader through two carriers (its constants, -mean * rstd)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.gn = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.head = nn.Conv2d(16, 6, 3, padding=1), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(self.gn(self.conv1(x)))).mean((2, 3)))


def test_uneven_groups_and_a_group_removed_whole_fold_into_few_carriers(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(NormedConvsGN(), {"x": rows(2, 3, 6, 6)})
    assert len(groups_of(ir, "conv1")) == 16 and removable(ir, "conv1", "conv2")
    # group 0 removed whole, 3 of group 1, 1 of group 2, none of group 3: 8 channels go
    gone = [0, 1, 2, 3, 4, 5, 6, 9]
    removed = [ir.analysis.unit_group[ir.spaces["conv1"].offset + j] for j in gone]
    masked = ir.with_kept(ir.mask_for(removed))
    masked.ablation = {n: torch.randn(s.size) for n, s in sorted(ir.spaces.items())}
    folded = FoldAblations().run(masked)
    assert folded.stats["norms_held"] == 1
    again = FoldAblations().run(folded.ir)  # held at the same channels: nothing to do
    assert not again.changed
    sliced = SliceUnits().run(again.ir)
    assert sliced.stats["norms_carried"] == 1
    # 8 kept columns + 3 groups x (constants, -mean * rstd) + ones: 15, not 16
    assert sliced.ir.gm.get_parameter("conv2.weight").shape[1] == 8 + 3 * 2 + 1
    block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
    x = [rows(5, 3, 6, 6, seed=3)]
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    assert_float_close(run64(sliced.ir.gm, x), run64(masked_model(masked), x))


def test_every_channel_of_a_carried_group_norm_removed_leaves_constants_only(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(NormedConvsGN(), {"x": rows(2, 3, 6, 6)})
    masked = ir.with_kept(ir.mask_for(groups_of(ir, "conv1")))
    masked.ablation = {n: torch.randn(s.size) for n, s in sorted(ir.spaces.items())}
    block = rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir
    x = rows(4, 3, 6, 6, seed=9)
    assert_float_close(run64(block.gm, [x]), run64(masked_model(masked), [x]))
    assert not [n for n, _ in block.gm.named_parameters() if n.startswith("conv1")]  # dce'd
    split = Split("search", {"x": rows(16, 3, 6, 6, seed=4)}, None)
    diff = export_block(block, masked_model(masked), split, tmp_path / "block.onnx", {})
    assert diff <= PARITY_TOLERANCE
