"""nn.MultiheadAttention's bmm path (need_weights=True) folds heads into the batch axis; the
capture unfolds them value for value, so heads are units unless the weights are read."""

from __future__ import annotations

import torch
from torch import nn

from legoc.frontend.load import trace
from legoc.ir.core import build_ir
from tests.helpers import assert_float_close

WIDTH, HEADS, TOKENS = 16, 4, 5


class ReadsWeights(nn.Module):
    def __init__(self, use_weights: bool):
        super().__init__()
        self.embed = nn.Linear(3, WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.head = nn.Linear(WIDTH, TOKENS)
        self.use_weights = use_weights

    def forward(self, x):
        h = self.embed(x)
        out, weights = self.attn(h, h, h, need_weights=True)
        y = self.head((out + h).mean(1))
        return y + weights.mean(1) if self.use_weights else y


def captured(use_weights: bool):
    torch.manual_seed(0)
    model = ReadsWeights(use_weights).eval()
    example = {"x": torch.randn(2, TOKENS, 3)}
    ir = build_ir(trace(model, ["x"], example), ["x"], example)
    fresh = torch.randn(6, TOKENS, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_float_close(ir.gm(fresh), model(fresh))
    return [g for g in ir.groups if any(m[0] == "attn" for m in g.members)]


def test_heads_folded_into_the_batch_are_units():
    heads = captured(use_weights=False)
    assert len(heads) == HEADS and all(g.frozen is None for g in heads)
    assert all(len(g.members) == 3 * WIDTH // HEADS for g in heads)


def test_attention_weights_read_by_the_model_freeze_the_heads():
    heads = captured(use_weights=True)
    assert len(heads) == HEADS
    assert all(g.frozen and g.frozen.startswith("attention scores") for g in heads)
