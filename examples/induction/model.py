"""A 2-layer attention-only transformer (4 heads per layer), the smallest model that forms the
induction circuit (Olsson et al. 2022): a previous-token head in layer 0 and an induction head
in layer 1 that reads it (K-composition).

`forward` uses scaled-dot-product attention, which legoc sees as heads; `patterns` computes the
same attention weights explicitly, to score the heads (build.py, heads.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 64  # token ids 0..63
MAX_TOKENS = 48  # learned positions; the model runs on any length up to this
D_MODEL, HEADS, LAYERS = 32, 4, 2


class Attention(nn.Module):
    def __init__(self, d_model: int = D_MODEL, heads: int = HEADS):
        super().__init__()
        self.head_dim = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        b, t, _ = x.shape  # heads by their width (-1 heads): the form a sliced block keeps
        return proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self._split(x, self.q), self._split(x, self.k), self._split(x, self.v)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, t, -1))

    def pattern(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights [batch, heads, query, key] (what `forward` computes inside)."""
        q, k = self._split(x, self.q), self._split(x, self.k)
        t = x.shape[1]
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(-1)


class AttnOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Embedding(MAX_TOKENS, D_MODEL)
        self.layers = nn.ModuleList(Attention() for _ in range(LAYERS))
        self.unembed = nn.Linear(D_MODEL, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        for layer in self.layers:
            x = x + layer(x)
        return self.unembed(x)

    @torch.no_grad()
    def patterns(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's attention weights [batch, heads, query, key]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        found = []
        for layer in self.layers:
            found.append(layer.pattern(x))
            x = x + layer(x)
        return found


def make_model() -> AttnOnly:
    return AttnOnly()
