"""torchvision's window attentions, as tiny modules written after its code (issue 15): MaxViT's
partition attention (a relative position bias gathered with `table[index]`, einsum scores, grid
partitions swapped with `swapaxes`) and Swin's `shifted_window_attention`, an fx-wrapped
function that takes the qkv and proj weights (captured through with torch.export: cyclic
shifts, a shift mask, the bias, windows regrouped around the scores). Each: every head and
channel is a unit, fold + slice on random kept sets equals the masked model, and the block
exports with parity."""

from __future__ import annotations

import torch

from legoc.ir.masking import masked_model
from legoc.passes.rewrite import BLOCK_PIPELINE, rewrite_pipeline
from tests.helpers import assert_float_close
from tests.ir.zoo.blocks import MaxViTNet, SwinNet
from tests.ir.zoo.test_norm_blocks import (
    check_parity,
    check_sliced,
    groups_of,
    ir_of,
    removable,
    rows,
    run64,
)

SIDE = 8  # a 4 x 4 grid after the stem: two windows of 2 a side, shifted by 1


def only_the_head_frozen(ir) -> bool:
    reasons = {(s, g.frozen) for g in ir.groups if g.frozen for s, _ in g.members}
    return reasons == {("head", "reaches the model output")}


def one_head_removed(ir, space: str):
    heads = groups_of(ir, space)
    masked = ir.with_kept(ir.mask_for([heads[0]]))
    gen = torch.Generator().manual_seed(7)
    masked.ablation = {n: torch.randn(s.size, generator=gen) for n, s in sorted(ir.spaces.items())}
    return masked, rewrite_pipeline(BLOCK_PIPELINE).run(masked).ir


def test_maxvit_heads_streams_and_neurons_are_units():
    torch.manual_seed(0)
    ir = ir_of(MaxViTNet(), {"x": rows(2, 3, SIDE, SIDE)})
    assert only_the_head_frozen(ir)
    for layer in ("window", "grid"):
        assert len(groups_of(ir, f"{layer}.attn_layer.1.to_qkv")) == 2  # a unit per head
    # the stream: stem, both merges and both MLP outputs add into it, slot by slot
    stream = {s for g in groups_of(ir, "stem") for s, _ in ir.groups[g].members}
    assert stream == {"stem", *(f"{k}.{m}" for k in ("window", "grid") for m in STREAM)}


STREAM = ("attn_layer.1.merge", "mlp_layer.3")


def test_maxvit_sliced_equals_masked_and_the_gathered_bias_loses_the_head(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(MaxViTNet(), {"x": rows(2, 3, SIDE, SIDE)})
    x = [rows(5, 3, SIDE, SIDE, seed=3)]
    check_sliced(ir, x)
    masked, block = one_head_removed(ir, "window.attn_layer.1.to_qkv")
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    params = dict(block.gm.named_parameters())
    assert params["window.attn_layer.1.table"].shape == (9, 1)  # (positions, kept heads)
    assert params["grid.attn_layer.1.table"].shape == (9, 2)
    check_parity(ir, {"x": rows(16, 3, SIDE, SIDE, seed=4)}, tmp_path)


def test_swin_wrapped_attention_is_captured_through_and_heads_are_units():
    torch.manual_seed(0)
    ir = ir_of(SwinNet(), {"x": rows(2, 3, SIDE, SIDE)})
    names = {getattr(n.target, "__name__", str(n.target)) for n in ir.gm.graph.nodes}
    assert "shifted_window_attention" not in names and "roll" in names
    assert only_the_head_frozen(ir)
    for block in ("blocks.0", "blocks.1"):
        assert len(groups_of(ir, f"{block}.attn.qkv")) == 2
        assert removable(ir, f"{block}.attn.qkv", f"{block}.mlp.0")


def test_swin_sliced_equals_masked_with_the_shift_mask_and_bias(tmp_path):
    torch.manual_seed(0)
    ir = ir_of(SwinNet(), {"x": rows(2, 3, SIDE, SIDE)})
    x = [rows(5, 3, SIDE, SIDE, seed=3)]
    check_sliced(ir, x)
    masked, block = one_head_removed(ir, "blocks.1.attn.qkv")  # the shifted block's head
    assert_float_close(run64(block.gm, x), run64(masked_model(masked), x))
    params = dict(block.gm.named_parameters())
    assert params["blocks.1.attn.table"].shape == (9, 1)
    assert params["blocks.1.attn.qkv.weight"].shape == (12, 8)
    check_parity(ir, {"x": rows(16, 3, SIDE, SIDE, seed=4)}, tmp_path)


def test_swin_windows_padded_with_zeros_freeze_the_stream_they_pad():
    """A 5 x 5 grid is padded to 6 x 6: a removed channel's constant would meet zeros in the
    padding, which no bias can fold, so the stream freezes naming the pad."""
    torch.manual_seed(0)
    ir = ir_of(SwinNet(), {"x": rows(2, 3, 10, 10)})
    reasons = {g.frozen for g in ir.groups for s, _ in g.members if s == "stem"}
    assert reasons == {"read by aten.pad, which legoc cannot slice through"}
    assert removable(ir, "blocks.0.attn.qkv", "blocks.0.mlp.0")
