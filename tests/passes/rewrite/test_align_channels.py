"""`align-channels`: padding to a channel multiple never changes what the block computes, and
it replaces fold-ablations' border-correction convs with one constant channel."""

from __future__ import annotations

import functools

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from legoc.ir import ops
from legoc.ir.analysis import get_attr_tensor
from legoc.passes.base import PassContext
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE, AlignChannels
from tests.helpers import TinyResCNN
from tests.passes.helpers import ATOL, cnn_ablation, masked, model_ir, random_ablation

SOURCE = 32  # channels of every conv in the source model


@functools.cache
def wide_cnn_ir():
    torch.manual_seed(0)
    model = TinyResCNN(channels=SOURCE, n_out=5, size=8).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model_ir(model, torch.rand(4, 1, 8, 8))


def sliced_block(removed: list[int], ablation: dict):
    ir = wide_cnn_ir()
    block = parse_pipeline(BLOCK_PIPELINE).run(masked(ir, removed, ablation)).ir
    return block


def conv_widths(ir) -> dict[str, int]:
    return {
        n.args[1].target: get_attr_tensor(ir.gm, n.args[1].target).shape[0]
        for n in ir.gm.graph.nodes
        if n.target is torch.nn.functional.conv2d
    }


def border_terms(ir) -> int:
    return sum(n.target is ops.constant_channel_conv for n in ir.gm.graph.nodes)


def outputs(ir, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ir.gm(x)


def fresh(n: int = 7, seed: int = 99) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 0.5


def residual_groups(count: int) -> list[int]:
    """The first `count` groups that couple conv1 and conv2 (the residual's channels)."""
    ir = wide_cnn_ir()
    coupled = [
        g.index
        for g in ir.groups
        if g.frozen is None and {m[0] for m in g.members} == {"conv1", "conv2"}
    ]
    assert len(coupled) == SOURCE
    return coupled[:count]


def test_pads_to_the_multiple_and_folds_the_border_maps_exactly():
    removed = residual_groups(SOURCE - 7)  # 7 channels kept: padded to 16
    block = sliced_block(removed, cnn_ablation(wide_cnn_ir()))
    assert border_terms(block) == 1  # removed conv1 channels reach the zero-padded conv2
    result = AlignChannels(16).run(
        block, PassContext(source_sizes={"conv1": SOURCE, "conv2": SOURCE})
    )
    aligned = result.ir
    assert set(conv_widths(block).values()) == {7}
    assert set(conv_widths(aligned).values()) == {16}
    assert result.stats["channels_added"] == 2 * 9
    assert result.stats["families_padded"] == 1
    assert result.stats["border_maps_folded"] == 1
    assert border_terms(aligned) == 0  # the ones channel carries the correction now
    x = fresh()
    assert float((outputs(aligned, x) - outputs(block, x)).abs().max()) <= ATOL


def test_never_wider_than_the_source_layer():
    block = sliced_block(residual_groups(SOURCE - 7), cnn_ablation(wide_cnn_ir()))
    result = AlignChannels(16).run(block, PassContext(source_sizes={"conv1": 12, "conv2": 12}))
    assert result.stats["channels_added"] == 0
    assert set(conv_widths(result.ir).values()) == {7}
    assert border_terms(result.ir) == 1


def test_a_multiple_of_one_changes_nothing():
    block = sliced_block(residual_groups(SOURCE - 7), cnn_ablation(wide_cnn_ir()))
    result = AlignChannels(1).run(block)
    assert not result.changed
    assert conv_widths(result.ir) == conv_widths(block)


def test_a_width_already_aligned_is_left_as_is():
    block = sliced_block(residual_groups(SOURCE - 16), cnn_ablation(wide_cnn_ir()))
    result = AlignChannels(16).run(block)
    assert result.stats["channels_added"] == 0
    assert set(conv_widths(result.ir).values()) == {16}


@settings(max_examples=15, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16), multiple=st.sampled_from([4, 8, 16]))
def test_random_masks_and_constants_stay_exact(data, seed, multiple):
    ir = wide_cnn_ir()
    removed = data.draw(st.sets(st.sampled_from(ir.removable_groups())), label="removed")
    block = sliced_block(sorted(removed), random_ablation(ir, seed))
    result = AlignChannels(multiple).run(block)
    x = fresh(seed=seed)
    assert float((outputs(result.ir, x) - outputs(block, x)).abs().max()) <= ATOL
    for name, width in conv_widths(result.ir).items():
        before = conv_widths(block)[name]
        assert width == before or (width % multiple == 0 and width - before < multiple), name


class FullyConvolutional(nn.Module):
    """A conv whose channels are the outputs: padding them would add outputs, so it must not."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3))


def test_channels_that_reach_the_outputs_are_not_padded():
    torch.manual_seed(1)
    ir = model_ir(FullyConvolutional().eval(), torch.rand(4, 1, 8, 8), outputs=[0, 1, 2])
    unread = [g.index for g in ir.groups if g.dead]  # conv2's channels the task does not read
    conv1 = [g.index for g in ir.groups if g.members[0][0] == "conv1"][:25]
    block = sliced_block_of(ir, unread + conv1)
    result = AlignChannels(16).run(block)
    x = fresh()
    assert outputs(result.ir, x).shape == outputs(block, x).shape == (7, 3)
    assert float((outputs(result.ir, x) - outputs(block, x)).abs().max()) <= ATOL
    widths = conv_widths(result.ir)
    assert np.all([w % 16 == 0 or w == conv_widths(block)[n] for n, w in widths.items()])
    assert widths["conv2.weight"] == conv_widths(block)["conv2.weight"] == 3
    assert widths["conv1.weight"] == 16 and conv_widths(block)["conv1.weight"] == 7
    assert result.stats["families_skipped"] == 1


def sliced_block_of(ir, removed: list[int]):
    block = parse_pipeline(BLOCK_PIPELINE).run(masked(ir, removed, random_ablation(ir, 3))).ir
    return block
