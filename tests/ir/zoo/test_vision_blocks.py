"""The torchvision zoo's convolutional constructs, as tiny modules written after its blocks:
depthwise and grouped convs, SE gates, stochastic depth, channel shuffle, dense and inception
concatenations. Each: every channel is a unit (only the head, which feeds the output, is
frozen), the sliced block equals the masked model on random kept sets, and two export to ONNX
with parity (issue 15)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from legoc.export.writer import OUTPUT_NAME, to_onnx_model
from legoc.ir.masking import masked_model
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from tests.helpers import assert_float_close
from tests.ir.zoo.blocks import BLOCKS, AlexNet, RelativePositionAttention, make_block_net
from tests.passes.helpers import masked, model_ir, random_ablation

SHAPE = (3, 8, 8)


def block_ir(name: str):
    model = make_block_net(name)
    example = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    return model, model_ir(model, example)


def sliced_and_masked(ir, seed: int):
    """A random half of the removable groups removed, with random ablation constants."""
    rng = np.random.default_rng(seed)
    removable = ir.removable_groups()
    removed = sorted(rng.choice(removable, size=len(removable) // 2, replace=False).tolist())
    rationale = masked(ir, removed, random_ablation(ir, seed))
    return parse_pipeline(BLOCK_PIPELINE).run(rationale).ir, masked_model(rationale)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_every_channel_is_a_unit_and_the_sliced_block_equals_the_masked_model(name):
    _, ir = block_ir(name)
    frozen = {(space, g.frozen) for g in ir.groups if g.frozen for space, _ in g.members}
    assert frozen == {("head", "reaches the model output")}
    assert len(ir.removable_groups()) >= 8
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(2))
    for seed in range(2):
        block, oracle = sliced_and_masked(ir, seed)
        assert block.param_count() < ir.param_count()
        with torch.no_grad():
            assert_float_close(block.gm(x), oracle(x), steps=64)


def test_a_depthwise_channel_goes_with_the_channel_feeding_it():
    _, ir = block_ir("mobilenet_v2")
    space = ir.spaces["blocks.0.block.1.0"]  # the depthwise conv of the first block
    assert space.kind == "grouped_conv2d" and space.groups == space.size
    for unit in range(space.size):
        group = ir.groups[ir.analysis.unit_group[space.offset + unit]]
        assert ("blocks.0.block.0.0", unit) in group.members  # the expand conv's channel


def test_a_grouped_conv_couples_each_group_whole():
    _, ir = block_ir("resnext")  # conv2: 8 channels in 4 groups of 2
    space = ir.spaces["blocks.0.conv2.0"]
    groups = {ir.analysis.unit_group[space.offset + u] for u in range(space.size)}
    assert len(groups) == 4
    for g in groups:
        members = set(ir.groups[g].members)
        assert sum(s == "blocks.0.conv2.0" for s, _ in members) == 2
        assert sum(s == "blocks.0.conv1.0" for s, _ in members) == 2


def test_an_se_gate_couples_the_gated_channel_and_its_gate_not_the_squeeze():
    _, ir = block_ir("mobilenet_v3")
    se = "blocks.0.block.2"
    gate = ir.spaces[f"{se}.fc2"]
    for unit in range(gate.size):
        group = ir.groups[ir.analysis.unit_group[gate.offset + unit]]
        assert ("blocks.0.block.1.0", unit) in group.members  # the depthwise channel it gates
    squeeze = ir.spaces[f"{se}.fc1"]
    for unit in range(squeeze.size):
        assert ir.groups[ir.analysis.unit_group[squeeze.offset + unit]].members == (
            (f"{se}.fc1", unit),
        )


def test_stochastic_depth_is_gone_from_the_traced_graph():
    _, ir = block_ir("efficientnet")
    assert not any("stochastic_depth" in str(n.target) for n in ir.gm.graph.nodes)


def test_a_channel_shuffle_is_one_permutation_gathered_at_slicing():
    _, ir = block_ir("shufflenet_v2")
    assert len(ir.analysis.permutations) == 2
    block, _ = sliced_and_masked(ir, 0)
    gathers = [n for n in block.gm.graph.nodes if n.target is torch.index_select]
    assert len(gathers) == 2


@pytest.mark.parametrize("name", ["mobilenet_v3", "shufflenet_v2"])
def test_the_sliced_block_exports_with_parity(name):
    _, ir = block_ir(name)
    block, oracle = sliced_and_masked(ir, 1)
    session = ort.InferenceSession(
        to_onnx_model(block).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(7, *SHAPE, generator=torch.Generator().manual_seed(3))
    (got,) = session.run([OUTPUT_NAME], {"x": x.numpy()})
    with torch.no_grad():
        assert_float_close(torch.from_numpy(got), oracle(x), steps=64)


def test_an_in_place_relu_after_a_layer_left_constant_runs():
    """All of AlexNet's first conv removed: the next conv becomes a broadcast constant, which
    its `ReLU(inplace=True)` writes into (an expanded view failed: zoo.py's alexnet)."""
    torch.manual_seed(0)
    ir = model_ir(AlexNet().eval(), torch.randn(4, *SHAPE))
    first = ir.spaces["features.0"]
    removed = sorted({ir.analysis.unit_group[first.offset + u] for u in range(first.size)})
    rationale = masked(ir, removed, random_ablation(ir, 0))
    block = parse_pipeline(BLOCK_PIPELINE).run(rationale).ir
    assert "features.0" not in block.spaces and "features.3" not in block.spaces
    oracle = masked_model(rationale)
    for rows in (1, 5):
        x = torch.randn(rows, *SHAPE, generator=torch.Generator().manual_seed(rows))
        with torch.no_grad():
            assert_float_close(block.gm(x), oracle(x), steps=64)


def test_a_relative_position_bias_laid_out_by_a_varargs_permute_is_sliced_with_the_heads():
    """MaxViT's bias is `table[index].view(n, n, -1).permute(2, 0, 1)`: following its head axis
    back crashed on the varargs permute (zoo.py maxvit_t); the gathered table is now sliced
    with the heads like an embedding lookup (more in test_window_attention.py)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), RelativePositionAttention(), nn.Linear(8, 4))
    ir = model_ir(net.eval(), torch.randn(4, 3, 4, 8))
    frozen = {(space, g.frozen) for g in ir.groups if g.frozen for space, _ in g.members}
    assert frozen == {("2", "reaches the model output")}
    params = [p for p in ir.analysis.channel_params if p.target == "1.table"]
    assert len(params) == 1 and params[0].dim == 1  # (positions, heads): cut along the heads
