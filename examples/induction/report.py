"""Write the induction example's card: every head's scores (heads.json, from build.py) next to
whether the extracted block kept it, and the block's faithfulness on every split.

Run after the extract:  python examples/induction/report.py induction-block.onnx
Writes examples/induction/CARD.md (or -o PATH). Reads the block's metadata only (onnx)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
HEAD_DIM = 8  # model.D_MODEL // model.HEADS: a head is 8 consecutive q/k/v channels


def kept_heads(block: Path) -> dict[str, bool]:
    """{"L0H2": kept?, ...} from the block's `legoc.rationale` (the q channels kept)."""
    meta = {p.key: p.value for p in onnx.load(str(block), load_external_data=False).metadata_props}
    rationale = json.loads(meta["legoc.rationale"])
    heads = {}
    for name, total in sorted(rationale["total"].items()):
        if not name.endswith(".q"):
            continue
        layer = int(name.split(".")[1])
        kept = set(rationale["kept"][name])
        for head in range(total // HEAD_DIM):
            heads[f"L{layer}H{head}"] = head * HEAD_DIM in kept
    return heads


def card(block: Path, summary: dict | None = None) -> str:
    scores = json.loads((HERE / "heads.json").read_text())
    kept = kept_heads(block)
    lines = [
        "# Induction heads: the block legoc extracts",
        "",
        f"Scores on {scores['rows']} rows of a random {scores['segment']}-token segment "
        "repeated once (Olsson et al. 2022): *previous-token* = mean attention from t to "
        "t-1; *induction* = mean attention, on the repeat, to the token after the earlier "
        "occurrence of the current token; *current-token* = mean attention from t to t.",
        "",
        "| head | previous-token | induction | current-token | kept |",
        "|---|---|---|---|---|",
    ]
    for head, values in scores["heads"].items():
        prev, induction, current = values
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
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("block", type=Path)
    parser.add_argument("--summary", type=Path, help="the extract's --json output")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "CARD.md")
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text()) if args.summary else None
    args.output.write_text(card(args.block, summary))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
