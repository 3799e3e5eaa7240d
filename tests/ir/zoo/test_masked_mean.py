"""Mean pooling over real tokens, as sentence-transformers writes it: `(x * w).sum(1) /
w.sum(1)` with `w` the attention mask. A removed unit's constant c comes out as c again, so
the units before the pooling stay units (issue 15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.ir.zoo.test_norm_blocks import (
    check_parity,
    check_sliced,
    frozen,
    groups_of,
    ir_of,
    removable,
)

D, T, VOCAB = 8, 6, 11


class Pooled(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        self.embed, self.ln = nn.Embedding(VOCAB, D), nn.LayerNorm(D)
        self.fc1, self.fc2, self.head = nn.Linear(D, 2 * D), nn.Linear(2 * D, D), nn.Linear(D, 3)
        self.form = form

    def forward(self, x, mask):
        h = self.ln(self.embed(x))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        if self.form == "unsqueeze":  # examples/minilm
            real = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * real).sum(1) / real.sum(1)
        elif self.form == "expand":  # sentence-transformers' Pooling
            real = mask.unsqueeze(-1).expand(h.size()).float()
            pooled = torch.sum(h * real, 1) / torch.clamp(real.sum(1), min=1e-9)
        elif self.form == "sum":  # a weighted sum, not a mean: the constant scales with it
            real = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * real).sum(1)
        else:  # divided by something else than the weights' sum
            real = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * real).sum(1) / (real.sum(1) + 1)
        return self.head(pooled)


def inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
    mask = torch.ones(n, T, dtype=torch.long)
    lengths = torch.randint(1, T + 1, (n,), generator=torch.Generator().manual_seed(seed))
    mask[torch.arange(T) >= lengths[:, None]] = 0
    ids = torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed + 1))
    return {"x": ids, "mask": mask}


@pytest.mark.parametrize("form", ["unsqueeze", "expand"])
def test_a_masked_mean_keeps_the_stream_units_and_slices_exactly(form, tmp_path):
    torch.manual_seed(0)
    ir = ir_of(Pooled(form), inputs(2, 0))
    assert removable(ir, "embed", "fc1") and len(groups_of(ir, "embed")) == D
    fresh = inputs(9, 3)
    check_sliced(ir, [fresh["x"], fresh["mask"]])
    check_parity(ir, inputs(16, 4), tmp_path)


@pytest.mark.parametrize("form", ["sum", "other-denominator"])
def test_a_weighted_sum_not_divided_by_its_weights_sum_freezes_the_stream(form):
    torch.manual_seed(0)
    ir = ir_of(Pooled(form), inputs(2, 0))
    assert all(f and "with an input-dependent tensor" in f for f in frozen(ir, "embed"))
    assert removable(ir, "fc1")
