"""Each head's previous-token and induction score from its attention pattern, as defined by
Olsson et al. 2022 ("In-context Learning and Induction Heads"), on repeated random tokens:

- previous-token score: mean attention from position t to t-1 (t >= 1);
- induction score: on the repeated half, mean attention from position t to the token after
  the earlier occurrence of token t, i.e. position t - L + 1 for a segment of length L;
- and, to name the other layer-0 head the circuit uses: current-token score, mean attention
  from position t to t itself.
"""

from __future__ import annotations

import torch

SCORE_SEGMENT, SCORE_ROWS, SCORE_SEED = 16, 200, 7


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_scores(model, length: int = SCORE_SEGMENT, rows: int = SCORE_ROWS) -> dict:
    gen = torch.Generator().manual_seed(SCORE_SEED)
    vocab = model.embed.num_embeddings
    segment = torch.stack([torch.randperm(vocab, generator=gen)[:length] for _ in range(rows)])
    ids = torch.cat([segment, segment], dim=1)
    heads = {}
    t = torch.arange(1, 2 * length)
    repeat = torch.arange(length, 2 * length)
    for layer, pattern in enumerate(model.patterns(ids)):  # [rows, heads, query, key]
        prev = pattern[:, :, t, t - 1].mean((0, 2))
        induction = pattern[:, :, repeat, repeat - length + 1].mean((0, 2))
        current = pattern[:, :, t, t].mean((0, 2))
        for head in range(pattern.shape[1]):
            values = (prev[head], induction[head], current[head])
            heads[head_name(layer, head)] = tuple(round(float(v), 6) for v in values)
    return {"segment": length, "rows": rows, "heads": heads}
