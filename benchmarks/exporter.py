"""The TorchScript-based ONNX exporter (what legoc uses) against `torch.onnx.export(dynamo=True)`
on the shapes example: every block contract, byte-identity, outputs and time.

    pip install onnxscript            # the dynamo exporter needs it (onnx-ir comes with it)
    python benchmarks/exporter.py     # one JSON line per exporter, then the differences

Each exporter extracts the same block twice (attribution, budget 20, seed 0): the two files
must be byte-identical (same seed, same bytes); the extract itself checks the block against
the masked torch model (parity <= 1e-4) and with the full onnx checker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from legoc import api
from legoc.runtime import Block
from legoc.runtime.data import read_arrays

SHAPES = Path(__file__).resolve().parents[1] / "examples" / "shapes"


def extract(folder: Path, dynamo: bool, run: int) -> tuple[Path, float]:
    """One extract with torch.onnx.export forced to the given exporter; its wall time."""
    original = torch.onnx.export

    def export(*args, **kwargs):
        kwargs["dynamo"] = dynamo
        if dynamo:
            kwargs.pop("do_constant_folding", None)  # the dynamo exporter always optimizes
        return original(*args, **kwargs)

    out = folder / f"{'dynamo' if dynamo else 'legacy'}-{run}.onnx"
    torch.onnx.export = export
    try:
        start = time.perf_counter()
        api.extract(
            SHAPES / "model.pt",
            SHAPES / "task.yaml",
            out,
            arch=f"{SHAPES / 'model.py'}:make_model",
            method="attribution",
            budget=20,
        )
        return out, time.perf_counter() - start
    finally:
        torch.onnx.export = original


def describe(path: Path) -> dict:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "inputs": {v.name: dims(v) for v in model.graph.input},
        "outputs": {v.name: dims(v) for v in model.graph.output},
        "metadata": sorted(p.key for p in model.metadata_props),
        "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "node_names": [n.name for n in model.graph.node][:3],
        "initializers": len(model.graph.initializer),
        "bytes": path.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    x = read_arrays(SHAPES / "data" / "search.pt")["x"]
    results, logits = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dynamo in (False, True):
            name = "dynamo" if dynamo else "legacy"
            paths, seconds = [], []
            for run in (1, 2):
                path, wall = extract(Path(tmp), dynamo, run)
                paths.append(path)
                seconds.append(round(wall, 1))
            digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
            results[name] = {
                "torch": torch.__version__,
                "extract_seconds": seconds,
                "same_bytes_twice": digests[0] == digests[1],
                "sha256": digests[0][:16],
                **describe(paths[0]),
            }
            logits[name] = Block.load(paths[0])(x=x)["logits"]
            print(json.dumps({name: results[name]}), flush=True)
    legacy, dynamo = results["legacy"], results["dynamo"]
    differs = sorted(k for k in legacy if legacy[k] != dynamo[k])
    gap = float(np.abs(logits["legacy"] - logits["dynamo"]).max())
    print(f"differs: {differs}; max |legacy - dynamo| on the search rows: {gap:.3g}")


if __name__ == "__main__":
    main()
