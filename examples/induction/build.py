"""Build the induction example: train the attention-only model on repeated random segments,
score its heads, write the files.

Run from anywhere:  python examples/induction/build.py   (about a minute on 2 cores)
Writes model.pt (a state dict, 62 KB), data/{search,iid,longer,new-tokens}.pt
(input_ids, per-position labels `y` with -100 where the task does not count) and heads.json
(each head's previous-token and induction scores). Deterministic.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from heads import head_scores  # same folder
from model import MAX_TOKENS, VOCAB, make_model

HERE = Path(__file__).resolve().parent
IGNORE = -100  # labels that do not count (the Hugging Face convention)
STEPS, BATCH, LR = 1500, 32, 3e-3
HALF = VOCAB // 2  # the search sees tokens 0..31 only; `new-tokens` uses 32..63
SPLITS = {  # name: (segment length, token range, rows, seed)
    "search": (8, (0, HALF), 256, 2),
    "iid": (8, (0, HALF), 256, 3),
    "longer": (MAX_TOKENS // 2, (0, HALF), 256, 4),
    "new-tokens": (8, (HALF, VOCAB), 256, 5),
}


def repeats(rows: int, length: int, tokens: tuple[int, int], gen: torch.Generator):
    """`rows` sequences of a random segment (distinct tokens) followed by itself, and the
    labels of next-token prediction on the repeat: position t >= length predicts token t+1
    (the token after the earlier occurrence of token t); every other position is IGNORE."""
    lo, hi = tokens
    segment = torch.stack(
        [torch.randperm(hi - lo, generator=gen)[:length] + lo for _ in range(rows)]
    )
    ids = torch.cat([segment, segment], dim=1)
    y = torch.full_like(ids, IGNORE)
    y[:, length:-1] = ids[:, length + 1 :]
    return ids, y


def train(model, gen: torch.Generator) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    for step in range(STEPS):
        length = int(torch.randint(4, MAX_TOKENS // 2 + 1, (1,), generator=gen))
        ids, y = repeats(BATCH, length, (0, VOCAB), gen)
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            print(f"step {step}: loss {loss:.3f} (segment {length})", flush=True)
    return losses


def main(threads: int = 2) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(min(threads, os.cpu_count() or 1))
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(1)
    model = make_model()
    train(model, gen)
    model.eval()
    (HERE / "data").mkdir(exist_ok=True)
    accuracy = {}
    for name, (length, tokens, rows, seed) in SPLITS.items():
        ids, y = repeats(rows, length, tokens, torch.Generator().manual_seed(seed))
        torch.save({"input_ids": ids, "y": y}, HERE / "data" / f"{name}.pt")
        with torch.no_grad():
            pred = model(ids).argmax(-1)
        counted = y != IGNORE
        accuracy[name] = float((pred[counted] == y[counted]).float().mean())
    torch.save(model.state_dict(), HERE / "model.pt")
    scores = head_scores(model)
    (HERE / "heads.json").write_text(json.dumps({"accuracy": accuracy, **scores}, indent=2) + "\n")
    print(f"accuracy on the repeat: {accuracy}")
    for head, (prev, induction, current) in scores["heads"].items():
        print(
            f"{head}: previous-token {prev:.3f}  induction {induction:.3f}  current {current:.3f}"
        )
    print(f"built in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    main(parser.parse_args().threads)
