"""Blocks of any length from models torch.fx traces: the accepted token range is probed.

A symbolic trace reads sizes at run time, so its graph takes every length the model takes; the
range comes from running model and graph at other lengths (a position table of 24 rows stops
the model at 24), and a model that bakes its length in is captured at it, saying why.
"""

from __future__ import annotations

import torch
from torch import nn

from legoc.frontend.load import trace
from legoc.ir.tokens import SEQUENCE

VOCAB, WIDTH, TOKENS = 20, 8, 8


class Positioned(nn.Module):
    def __init__(self, positions: int | None):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Embedding(positions, WIDTH) if positions else None
        self.out = nn.Linear(WIDTH, 3)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(input_ids.shape[1]))
        return self.out(x)


class BakedLength(Positioned):
    def forward(self, input_ids):
        return self.out(self.embed(input_ids).view(-1, TOKENS, WIDTH).mean(1))


def lengths_of(module: nn.Module) -> dict | None:
    torch.manual_seed(0)
    example = {"input_ids": torch.randint(0, VOCAB, (4, TOKENS))}
    return trace(module.eval(), ["input_ids"], example).meta.get(SEQUENCE)


def test_a_position_table_bounds_the_accepted_lengths():
    assert lengths_of(Positioned(24)) == {"inputs": ["input_ids"], "min": 1, "max": 24}


def test_a_model_without_a_position_limit_takes_any_length():
    assert lengths_of(Positioned(None)) == {"inputs": ["input_ids"], "min": 1, "max": None}


def test_a_length_baked_into_the_code_is_fixed_and_named():
    lengths = lengths_of(BakedLength(None))
    assert (lengths["min"], lengths["max"]) == (TOKENS, TOKENS)
    assert "fixed" in lengths


def test_float_inputs_have_no_token_axis():
    model = nn.Linear(TOKENS, 3).eval()
    gm = trace(model, ["input"], {"input": torch.randn(4, TOKENS)})
    assert SEQUENCE not in gm.meta
