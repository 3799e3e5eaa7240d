"""Attention written with matmul/einsum + softmax: heads (or a one-head layer) are units, the
block equals the masked model, and what breaks the exactness argument freezes with a reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from legoc.passes.rewrite import DeadCodeElimination, FoldAblations, SliceUnits
from tests.passes.helpers import (
    ATOL,
    masked,
    masked_oracle,
    max_abs_diff,
    model_ir,
    random_ablation,
)

WIDTH, HEADS, TOKENS = 8, 2, 5


class Written(nn.Module):
    """q from one stream, k and v from another (cross attention when `cross`), heads on their
    own axis (or none: `heads=1, flat=True`), scores by matmul or einsum."""

    def __init__(self, heads=HEADS, cross=False, flat=False, einsum=False, leak=None):
        super().__init__()
        self.embed, self.context = nn.Linear(3, WIDTH), nn.Linear(3, WIDTH)
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.o, self.head = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 2)
        self.bias = nn.Parameter(torch.randn(1, heads, TOKENS, TOKENS))
        self.heads, self.cross, self.flat, self.einsum, self.leak = heads, cross, flat, einsum, leak

    def split(self, t):
        if self.flat:
            return t
        return t.view(t.size(0), TOKENS, self.heads, -1).transpose(1, 2)

    def forward(self, x):
        h = torch.relu(self.embed(x))
        kv = torch.relu(self.context(x)) if self.cross else h
        q, k, v = self.split(self.q(h)), self.split(self.k(kv)), self.split(self.v(kv))
        kt = k.transpose(-1, -2)
        scores = torch.einsum("bhid,bhjd->bhij", q, k) if self.einsum else q @ kt
        scores = scores * 0.5 + (0 if self.flat else self.bias)
        mask = (x[:, None, :, 0] > 0).float() * -1e4  # input-dependent, broadcast over heads
        p = torch.softmax(scores + (mask if self.flat else mask[:, None]), dim=-1)
        if self.leak == "after-softmax":
            p = p * 2.0
        out = torch.einsum("bhij,bhjd->bhid", p, v) if self.einsum else p @ v
        if not self.flat:
            out = out.transpose(1, 2).reshape(x.size(0), TOKENS, WIDTH)
        y = self.head(torch.relu(self.o(out)).mean(1))
        return y + scores.mean() if self.leak == "scores" else y


def ir_of(**options):
    torch.manual_seed(0)
    return model_ir(Written(**options).eval(), torch.randn(2, TOKENS, 3))


def heads(ir):
    return sorted({g.index for g in ir.groups if any(m[0] == "q" for m in g.members)})


@pytest.mark.parametrize(
    "options",
    [{}, {"einsum": True}, {"cross": True}, {"heads": 1}, {"heads": 1, "flat": True}],
    ids=["matmul", "einsum", "cross", "one-head", "one-head-no-axis"],
)
def test_heads_are_units_and_the_block_equals_the_masked_model(options):
    ir = ir_of(**options)
    groups = heads(ir)
    n_heads = options.get("heads", HEADS)
    assert len(groups) == n_heads
    for g in groups:
        assert ir.groups[g].frozen is None
        assert {m[0] for m in ir.groups[g].members} == {"q", "k", "v"}
        assert len(ir.groups[g].members) == 3 * WIDTH // n_heads
    removed = groups[:1] + [g.index for g in ir.groups if g.members[0][0] == "o"][::3]
    m = masked(ir, removed, random_ablation(ir, 0))
    result = SliceUnits().run(FoldAblations().run(m).ir)
    block = DeadCodeElimination().run(result.ir).ir
    x = torch.randn(9, TOKENS, 3, generator=torch.Generator().manual_seed(5))
    assert max_abs_diff(block, masked_oracle(m), x) <= ATOL
    q = block.gm.get_parameter("q.weight") if n_heads > 1 else None
    assert q is None or tuple(q.shape) == (WIDTH - WIDTH // n_heads, WIDTH)


@pytest.mark.parametrize(
    "leak,reason",
    [
        ("scores", "attention scores reach the model output"),
        ("after-softmax", "attention probabilities changed by"),
    ],
)
def test_what_breaks_exactness_freezes_the_heads_with_a_reason(leak, reason):
    ir = ir_of(leak=leak)
    groups = heads(ir)
    assert len(groups) == HEADS
    assert all(reason in (ir.groups[g].frozen or "") for g in groups)
