"""A MiniLM block at other sequence lengths: its predictions against the full model's.

    python examples/minilm/build.py        # once: model.pt and data/
    legoc extract examples/minilm/model.pt --arch examples/minilm/model.py:make_model \\
        --task examples/minilm/task.yaml -o minilm-block.onnx
    python benchmarks/minilm_lengths.py minilm-block.onnx [--lengths 8 16 32 64]

Every split's sentences (tokenised to 16 tokens) are right-padded (or cut, for 8) to each
length; the block (onnxruntime) and the full torch model run the same inputs. Prints, per split
and length, how often the block's predicted topic equals the full model's, its accuracy, and,
on the sentences that fit in that many tokens (all of them from 16 up), the largest change of
the block's logits from its own 16-token logits and how often its topic is unchanged (length
invariance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from legoc.ir.tokens import with_length

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "minilm"
NAMES = ["input_ids", "attention_mask"]


def full_model() -> torch.nn.Module:
    sys.path.insert(0, str(EXAMPLE))  # the example's own module, as --arch loads it
    from model import make_model

    model = make_model()
    model.load_state_dict(torch.load(EXAMPLE / "model.pt", weights_only=True))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("block")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    torch.set_num_threads(2)
    meta = {p.key: p.value for p in onnx.load(args.block).metadata_props}
    print("legoc.sequence_lengths:", meta.get("legoc.sequence_lengths"))
    session = ort.InferenceSession(args.block, providers=["CPUExecutionProvider"])
    model = full_model()
    rows = []
    for split in ("search", "iid", "paraphrase"):
        data = torch.load(EXAMPLE / "data" / f"{split}.pt", weights_only=True)
        own = {n: data[n] for n in NAMES}
        base = session.run(["logits"], {n: own[n].numpy() for n in NAMES})[0]
        for length in args.lengths:
            inputs = with_length(own, NAMES, length)
            fits = (own["attention_mask"][:, length:].sum(1) == 0).numpy()
            cut = int((~fits).sum())
            got = session.run(["logits"], {n: inputs[n].numpy() for n in NAMES})[0]
            with torch.no_grad():
                want = model(*[inputs[n] for n in NAMES]).numpy()
            rows.append(
                {
                    "split": split,
                    "tokens": length,
                    "rows": len(got),
                    "rows_cut": cut,
                    "agreement": float((got.argmax(-1) == want.argmax(-1)).mean()),
                    "block_accuracy": float((got.argmax(-1) == data["y"].numpy()).mean()),
                    "full_accuracy": float((want.argmax(-1) == data["y"].numpy()).mean()),
                    # on the sentences that fit in `length` tokens (all of them from 16 up)
                    "max_logit_change_vs_16": float(np.abs(got[fits] - base[fits]).max()),
                    "same_prediction_as_16": float(
                        (got[fits].argmax(-1) == base[fits].argmax(-1)).mean()
                    ),
                }
            )
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
