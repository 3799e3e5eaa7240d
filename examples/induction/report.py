"""Write the induction example's card: every head's scores (heads.json, from build.py) next to
whether the extracted block kept it, the faithfulness of every subset of the heads (scored by
legoc, as extract scores a kept set), the block's scores on every split, and the ONNX block's
accuracy in onnxruntime at lengths from 8 to 48 tokens.

Run after the extract (the README's command):
    python examples/induction/report.py induction-block.onnx --summary induction.json
Writes examples/induction/CARD.md (or -o PATH) and subsets.json (the 255 subsets' scores and the
block's heads, which tests/test_induction.py checks). About 15 s on one thread."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnxruntime as ort
import torch
from build import HALF, IGNORE, repeats  # same folder
from model import MAX_TOKENS, VOCAB, make_model
from subsets import (
    best_by_size,
    in_every,
    kept_heads,
    names,
    rank_of,
    rationale,
    score_subsets,
    smallest_reaching,
)

from legoc.scoring.prepare import prepare

HERE = Path(__file__).resolve().parent
SEGMENTS = (4, 8, 12, 16, 24)  # 8..48 tokens: up to the model's position table
LENGTH_ROWS, LENGTH_SEED = 256, 11  # fresh rows: a seed that neither the splits nor training use
assert 2 * max(SEGMENTS) <= MAX_TOKENS


def length_table(block: Path) -> list[dict]:
    """Accuracy on the repeat of the full model (torch) and the block (onnxruntime), and how
    often their predictions agree, on fresh rows of each segment length, for ids 0..31 (the
    search's) and 32..63 (never searched on)."""
    model = make_model()
    model.load_state_dict(torch.load(HERE / "model.pt", weights_only=True))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(block), options, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(LENGTH_SEED)
    rows = []
    for tokens in ((0, HALF), (HALF, VOCAB)):
        for segment in SEGMENTS:
            ids, y = repeats(LENGTH_ROWS, segment, tokens, gen)
            with torch.no_grad():
                full = model.eval()(ids).argmax(-1)
            logits = session.run(["logits"], {"input_ids": ids.numpy()})[0]
            block_pred = torch.from_numpy(logits).argmax(-1)
            counted = y != IGNORE
            y, full, block_pred = y[counted], full[counted], block_pred[counted]
            rows.append(
                {
                    "segment": segment,
                    "ids": f"{tokens[0]}..{tokens[1] - 1}",
                    "full": float((full == y).float().mean()),
                    "block": float((block_pred == y).float().mean()),
                    "agree": float((block_pred == full).float().mean()),
                }
            )
    return rows


def subset_lines(scores: dict, kept: frozenset, heads: dict, keep: float) -> list[str]:
    """The card's section on every subset of heads."""
    best = best_by_size(scores)
    smallest = smallest_reaching(scores, keep)
    lines = [
        "",
        "## Every subset of heads",
        "",
        f"Faithfulness on `search` of all {len(scores)} non-empty sets of the {len(heads)} "
        "heads, scored with legoc's own scorer as `extract` scores a kept set (the other "
        "heads' q/k/v channels mean-ablated, the masked model exactly):",
        "",
        f"| heads kept | most faithful set | faithfulness | sets reaching keep {keep} |",
        "|---|---|---|---|",
    ]
    for size, (heads_of_best, faith) in best.items():
        reaching = sum(len(h) == size and f >= keep for h, f in scores.items())
        total = sum(len(h) == size for h in scores)
        lines.append(f"| {size} | {names(heads_of_best)} | {faith:.3f} | {reaching} of {total} |")
    rank = rank_of(scores, kept)
    same = sum(len(h) == len(kept) for h in scores)
    verdict = "the most faithful" if rank == 1 else f"number {rank} by faithfulness"
    lines += [
        "",
        f"- The block's heads, {names(kept)}, are {verdict} of the {same} sets of "
        f"{len(kept)} heads (faithfulness {scores[kept]:.3f}).",
    ]
    if smallest is None:
        lines.append(f"- No set of heads reaches keep {keep}.")
    else:
        below = best.get(smallest - 1)
        tail = f"; the best of {smallest - 1}, {names(below[0])}, reaches {below[1]:.3f}"
        lines.append(
            f"- The fewest heads that reach keep {keep}: {smallest}" + (tail if below else "") + "."
        )
        lines.append(
            f"- Every set that reaches keep holds {names(in_every(scores, keep))}; every one "
            f"of {smallest} heads holds {names(in_every(scores, keep, smallest))}."
        )
    prev = max(heads, key=lambda h: heads[h][0])
    current = max(heads, key=lambda h: heads[h][2])
    induction = {h for h, values in heads.items() if values[1] > 0.5}
    without = frozenset({prev} | induction)
    lines.append(
        f"- The top previous-token head with every induction head (score > 0.5), without "
        f"the top current-token head {current}: {names(without)} reaches "
        f"{scores[without]:.3f}."
    )
    return lines


def length_lines(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## The ONNX block at other lengths",
        "",
        f"Fresh rows ({LENGTH_ROWS} per line, seed {LENGTH_SEED}, `build.repeats`): accuracy "
        "on the repeat of the full model (torch) and of the block in onnxruntime, and the "
        "share of positions where they predict the same token. The search saw 16 tokens of "
        "ids 0..31 only.",
        "",
        "| segment | tokens | ids | full model | block (onnxruntime) | same prediction |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['segment']} | {2 * r['segment']} | {r['ids']} | {r['full']:.3f} | "
            f"{r['block']:.3f} | {r['agree']:.3f} |"
        )
    return lines


def card(block: Path, summary: dict | None, scores: dict, keep: float, lengths: list[dict]) -> str:
    heads = json.loads((HERE / "heads.json").read_text())
    kept = kept_heads(block)
    lines = [
        "# Induction heads: the block legoc extracts",
        "",
        f"Scores on {heads['rows']} rows of a random {heads['segment']}-token segment "
        "repeated once (Olsson et al. 2022): *previous-token* = mean attention from t to "
        "t-1; *induction* = mean attention, on the repeat, to the token after the earlier "
        "occurrence of the current token; *current-token* = mean attention from t to t.",
        "",
        "| head | previous-token | induction | current-token | kept |",
        "|---|---|---|---|---|",
    ]
    for head, (prev, induction, current) in heads["heads"].items():
        mark = "**yes**" if kept[head] else "no"
        lines.append(f"| {head} | {prev:.3f} | {induction:.3f} | {current:.3f} | {mark} |")
    if summary is not None:
        lines += ["", "| split | full model | block | faithfulness |", "|---|---|---|---|"]
        for split, s in summary["scores"].items():
            lines.append(
                f"| {split} | {s['metric_full']:.3f} | {s['metric_block']:.3f} | "
                f"{s['faithfulness']:.3f} |"
            )
        params = summary["params"]
        lines += ["", f"Params: {params['block']:,} of {params['source']:,}."]
    chosen = frozenset(h for h, k in kept.items() if k)
    lines += subset_lines(scores, chosen, heads["heads"], keep)
    lines += length_lines(lengths)
    return "\n".join(lines) + "\n"


def record(block: Path, keep: float, scores: dict) -> dict:
    """subsets.json: keep, the block's heads and faithfulness (as extract reported it), and
    every subset's faithfulness ("L0H1+L0H2": ...)."""
    by_size = sorted(scores.items(), key=lambda item: (len(item[0]), sorted(item[0])))
    return {
        "keep": keep,
        "kept": sorted(h for h, k in kept_heads(block).items() if k),
        "kept_faithfulness": round(rationale(block)["faithfulness"], 6),
        "faithfulness": {"+".join(sorted(h)): round(f, 6) for h, f in by_size},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("block", type=Path)
    parser.add_argument("--summary", type=Path, help="the extract's --json output")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "CARD.md")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: a tiny model)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    summary = json.loads(args.summary.read_text()) if args.summary else None
    prep = prepare(HERE / "model.pt", HERE / "task.yaml", arch=f"{HERE / 'model.py'}:make_model")
    scores, keep = score_subsets(prep), prep.task.spec.keep
    (HERE / "subsets.json").write_text(
        json.dumps(record(args.block, keep, scores), indent=1) + "\n"
    )
    lengths = length_table(args.block)
    args.output.write_text(card(args.block, summary, scores, keep, lengths))
    print(f"wrote {args.output} and subsets.json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
