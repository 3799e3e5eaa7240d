"""torchvision's window attentions, as tiny modules written after its code (issue 15): MaxViT's
partition attention (a relative position bias gathered with `table[index]`, einsum scores, grid
partitions swapped with `swapaxes`) and Swin's `shifted_window_attention`, an fx-wrapped
function that takes the qkv and proj weights (captured through with torch.export: cyclic
shifts, a shift mask, the bias, windows regrouped around the scores, zero padding to whole
windows). Each: every head and channel is a unit, fold + slice on random kept sets equals the
masked model, and the block exports with parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from legoc.frontend.capture import wrapped_weight_calls
from legoc.ir.masking import masked_model
from legoc.passes.rewrite import BLOCK_PIPELINE, rewrite_pipeline
from tests.helpers import assert_float_close
from tests.ir.zoo.blocks import MaxViTNet, SwinNet, make_block_net
from tests.ir.zoo.test_norm_blocks import (
    check_parity,
    check_sliced,
    groups_of,
    ir_of,
    removable,
    rows,
    run64,
)

SIDE = 8  # MaxViT: a 4 x 4 grid after the stem, windows and grid cells of 2 x 2
PADDED = 10  # Swin: a 5 x 5 grid, padded to 6 x 6 for windows of 2, shifted by 1


@pytest.fixture(scope="module")
def maxvit():
    torch.manual_seed(0)
    return ir_of(MaxViTNet(), {"x": rows(2, 3, SIDE, SIDE)})


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return ir_of(SwinNet(), {"x": rows(2, 3, PADDED, PADDED)})


def only_the_head_frozen(ir) -> bool:
    reasons = {(s, g.frozen) for g in ir.groups if g.frozen for s, _ in g.members}
    return reasons == {("head", "reaches the model output")}


def removed(ir, groups: list[int], seed: int = 7):
    """`ir` with `groups` removed at random constants, and its sliced block."""
    masked = ir.with_kept(ir.mask_for(groups))
    gen = torch.Generator().manual_seed(seed)
    masked.ablation = {n: torch.randn(s.size, generator=gen) for n, s in sorted(ir.spaces.items())}
    return masked, rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir


STREAM = ("attn_layer.1.merge", "mlp_layer.3")


def test_maxvit_heads_streams_and_neurons_are_units(maxvit):
    assert only_the_head_frozen(maxvit)
    for layer in ("window", "grid"):
        assert len(groups_of(maxvit, f"{layer}.attn_layer.1.to_qkv")) == 2  # a unit per head
    # the stream: stem, both merges and both MLP outputs add into it, slot by slot
    stream = {s for g in groups_of(maxvit, "stem") for s, _ in maxvit.groups[g].members}
    assert stream == {"stem", *(f"{k}.{m}" for k in ("window", "grid") for m in STREAM)}


def test_maxvit_sliced_equals_masked_and_the_gathered_bias_loses_the_head(maxvit, tmp_path):
    x = [rows(5, 3, SIDE, SIDE, seed=3)]
    check_sliced(maxvit, x)
    masked, block = removed(maxvit, groups_of(maxvit, "window.attn_layer.1.to_qkv")[:1])
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    params = dict(block.gm.named_parameters())
    assert params["window.attn_layer.1.table"].shape == (9, 1)  # (positions, kept heads)
    assert params["grid.attn_layer.1.table"].shape == (9, 2)
    check_parity(maxvit, {"x": rows(16, 3, SIDE, SIDE, seed=4)}, tmp_path)


def test_swin_wrapped_attention_is_captured_through_and_heads_are_units(swin):
    targets = " ".join(str(n.target) for n in swin.gm.graph.nodes if n.op == "call_function")
    assert "shifted_window_attention" not in targets
    assert "roll" in targets and "pad" in targets
    assert only_the_head_frozen(swin)
    for block in ("blocks.0", "blocks.1"):
        assert len(groups_of(swin, f"{block}.attn.qkv")) == 2
        assert removable(swin, f"{block}.attn.qkv", f"{block}.mlp.0")


def test_swin_sliced_equals_masked_with_padding_shift_mask_and_bias(swin, tmp_path):
    """What is padded is norm1's output, whose readers rebuild removed channels from carriers
    that are padded with zeros too; a removed head's values are constants at every key."""
    x = [rows(5, 3, PADDED, PADDED, seed=3)]
    check_sliced(swin, x)
    stream = groups_of(swin, "stem")
    head = groups_of(swin, "blocks.1.attn.qkv")[:1]  # the shifted block's first head
    masked, block = removed(swin, stream[::2] + head)
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    params = dict(block.gm.named_parameters())
    assert params["stem.weight"].shape[0] == len(stream[1::2])
    assert params["blocks.1.attn.table"].shape == (9, 1)
    assert params["blocks.1.attn.qkv.weight"].shape[0] == 12  # 3 x one head of 4 channels
    check_parity(swin, {"x": rows(16, 3, PADDED, PADDED, seed=4)}, tmp_path)


class PaddedConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv2(F.pad(self.conv1(x), (1, 1, 1, 1))).mean((2, 3)))


def test_zero_padding_of_other_units_freezes_them_naming_the_pad():
    """conv1's removed channel would be its constant inside and zero in the padding: no bias
    of conv2 folds that, so conv1 freezes (conv2 stays units)."""
    ir = ir_of(PaddedConvs(), {"x": rows(2, 3, 4, 4)})
    assert set(np.unique([f for f in frozen_of(ir, "conv1")])) == {
        "zero padding of units that are not a norm's output"
    }
    assert removable(ir, "conv2")


def frozen_of(ir, space: str) -> list[str | None]:
    return [ir.groups[g].frozen for g in groups_of(ir, space)]


def test_only_wrapped_calls_that_take_weights_send_a_model_to_torch_export():
    """fx keeps an fx-wrapped function as one call: one taking parameters (Swin's attention,
    its bias lookup) hides layers, one taking none (stochastic depth) hides nothing."""
    swin = torch.fx.symbolic_trace(SwinNet())
    assert wrapped_weight_calls(swin) == ["relative_position_bias", "shifted_window_attention"]
    assert wrapped_weight_calls(torch.fx.symbolic_trace(make_block_net("efficientnet"))) == []
