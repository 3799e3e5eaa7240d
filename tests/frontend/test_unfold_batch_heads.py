"""DeBERTa's attention folds heads into the batch axis with reshapes and adds a gathered
relative position bias; the capture unfolds it value for value, so heads are units (q, k, v
and the positional rows together) and a removed head slices exactly. A fold that meets an op
the rewrite does not know stays folded, and inspect says so."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from legoc.frontend.capture import capture
from legoc.ir.core import build_ir
from legoc.ir.frozen import frozen_units
from legoc.ir.masking import masked_model
from legoc.passes.registry import parse_pipeline
from legoc.passes.rewrite import BLOCK_PIPELINE
from legoc.scoring.scorer import Scorer
from legoc.task.metrics import METRICS
from legoc.task.spec import Split
from tests.helpers import assert_float_close

WIDTH, HEADS, TOKENS, SPAN = 16, 4, 5, 4
DIM = WIDTH // HEADS


class Disentangled(nn.Module):
    """DeBERTa-v2's DisentangledSelfAttention in miniature: content scores plus c2p and p2c
    biases gathered by clamped relative position, all on (B*H, T, d) tensors."""

    def __init__(self, reads_folded=False, share_att_key=False, reads_positions=False):
        super().__init__()
        self.embed = nn.Linear(3, WIDTH)
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.pos_k, self.pos_q = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.rel = nn.Parameter(torch.randn(2 * SPAN, WIDTH))
        self.out, self.head = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 3)
        self.reads_folded, self.reads_positions = reads_folded, reads_positions
        self.share_att_key = share_att_key  # q and k project the positions too

    @staticmethod
    def fold(x):
        x = x.view(x.size(0), x.size(1), HEADS, -1).permute(0, 2, 1, 3).contiguous()
        return x.view(-1, x.size(2), x.size(3))

    def forward(self, x):
        h = self.embed(x)
        batch, tokens = h.size(0), h.size(1)
        q, k, v = self.fold(self.q(h)), self.fold(self.k(h)), self.fold(self.v(h))
        scores = torch.bmm(q, k.transpose(-1, -2) / 3.0)
        rel = self.rel.unsqueeze(0)
        proj_k, proj_q = (self.k, self.q) if self.share_att_key else (self.pos_k, self.pos_q)
        if self.reads_positions:  # the positional rows also reach the output
            h = h + proj_k(rel).mean(1, keepdim=True)
        pos_k = self.fold(proj_k(rel)).repeat(batch, 1, 1)
        pos_q = self.fold(proj_q(rel)).repeat(batch, 1, 1)
        where = torch.arange(tokens)[:, None] - torch.arange(tokens)[None, :]
        index = torch.clamp(where + SPAN, 0, 2 * SPAN - 1).unsqueeze(0)
        index = index.expand([q.size(0), tokens, tokens])
        c2p = torch.gather(torch.bmm(q, pos_k.transpose(-1, -2)), -1, index)
        p2c = torch.gather(torch.bmm(k, pos_q.transpose(-1, -2)), -1, index).transpose(-1, -2)
        scores = scores + c2p / 3.0 + p2c / 3.0
        probs = torch.softmax(scores.view(-1, HEADS, tokens, tokens), dim=-1)
        context = torch.bmm(probs.view(-1, tokens, tokens), v)
        if self.reads_folded:  # the folded scores leave the attention: nothing to unfold
            context = context + scores.mean(-1, keepdim=True)
        context = context.view(-1, HEADS, tokens, DIM).permute(0, 2, 1, 3).contiguous()
        y = self.out(context.view(batch, tokens, -1)) + h
        return self.head(y.mean(1))


def captured(**options):
    torch.manual_seed(0)
    model = Disentangled(**options).eval()
    example = {"x": torch.randn(2, TOKENS, 3)}
    with torch.no_grad():
        gm = capture(model, example, ["x"])
    return model, build_ir(gm, ["x"], example)


def without_two_heads(ir, heads):
    """The masked IR and the sliced block with heads 0 and 2 removed (mean ablation)."""
    masked = ir.with_kept(ir.mask_for([heads[0].index, heads[2].index]))
    split = Split("search", {"x": torch.randn(16, TOKENS, 3)}, None)
    masked.ablation = dict(Scorer(ir, split, METRICS["kl"], "mean").values)
    return masked, parse_pipeline(BLOCK_PIPELINE).run(masked).ir


def test_folded_heads_with_a_gathered_position_bias_are_units_and_slice_exactly():
    model, ir = captured()
    fresh = torch.randn(6, TOKENS, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the unfolded graph computes what the model computes
        assert_float_close(ir.gm(fresh), model(fresh))
    assert not any(n.target is torch.bmm for n in ir.gm.graph.nodes)
    heads = [g for g in ir.groups if any(m[0] == "q" for m in g.members)]
    assert len(heads) == HEADS and all(g.frozen is None for g in heads)
    for g in heads:  # a head: its q, k, v, positional key and positional query rows
        spaces = sorted({m[0] for m in g.members})
        assert spaces == ["k", "pos_k", "pos_q", "q", "v"] and len(g.members) == 5 * DIM
    masked, block = without_two_heads(ir, heads)
    gone = {u for g in (heads[0], heads[2]) for space, u in g.members if space == "pos_k"}
    assert len(gone) == 2 * DIM
    assert masked.kept_units()["pos_k"] == sorted(set(range(WIDTH)) - gone)
    with torch.no_grad():
        assert_float_close(block.gm(fresh), masked_model(masked)(fresh))
    assert block.param_count() < ir.param_count()


def test_folded_scores_read_elsewhere_keep_the_heads_folded_and_say_so():
    _model, ir = captured(reads_folded=True)
    lines = [r.line() for r in frozen_units(ir)]
    assert any(
        line.startswith("q: 16/16 units frozen by reshape at node ")
        and "attention heads folded into the batch axis" in line
        for line in lines
    ), lines
    assert np.any([n.target is torch.bmm for n in ir.gm.graph.nodes])
