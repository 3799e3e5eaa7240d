"""Blocks for the runtime tests: hand-built ONNX graphs (no torch) and extracted tiny blocks."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPES = Path(__file__).resolve().parents[2] / "examples" / "shapes"
TINY = {"mlp": ("mlp", None), "mlp2": ("mlp", [0, 3]), "cnn": ("cnn", None)}


@functools.cache
def tiny_blocks(root: Path) -> dict[str, dict]:
    """{mlp, mlp2, cnn}: each a tiny task folder (tests.helpers.write_task) plus `block`, its
    extracted .onnx. mlp: x[N,6] -> logits[N,4]; mlp2: outputs [0,3] -> logits[N,2];
    cnn: x[N,1,8,8] -> logits[N,5]. Extracted once per process (several test modules use
    them): copy a block before changing it."""
    from legoc import api
    from tests.helpers import write_task

    blocks = {}
    for tag, (kind, outputs) in TINY.items():
        paths = write_task(root / tag, kind, outputs=outputs)
        block = root / f"{tag}.onnx"
        api.extract(
            paths["model"], paths["spec"], block, arch=paths["arch"], method="greedy", budget=40
        )
        blocks[tag] = {**paths, "block": block}
    return blocks


@functools.cache
def shapes_block(root: Path) -> Path:
    """The shipped shapes example extracted with a small one-shot budget (attribution, 20
    evaluations: a budget of 26 with its two attribution passes charged 3 each)."""
    from legoc import api

    root.mkdir(parents=True, exist_ok=True)
    out = root / "shapes.onnx"
    api.extract(
        SHAPES / "model.pt",
        SHAPES / "task.yaml",
        out,
        arch=f"{SHAPES / 'model.py'}:make_model",
        method="attribution",
        budget=26,
    )
    return out


def linear_model(
    n_in: int,
    n_out: int,
    seed: int = 0,
    input_name: str = "x",
    output_name: str = "logits",
    opset: int = 17,
    ir_version: int = 8,
    dtype: int = TensorProto.FLOAT,
    task: str | None = None,
) -> onnx.ModelProto:
    """x[batch, n_in] -> Gemm -> [batch, n_out], weights seeded."""
    rng = np.random.default_rng(seed)
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    weight = numpy_helper.from_array(rng.standard_normal((n_out, n_in)).astype(np_dtype), "w")
    bias = numpy_helper.from_array(rng.standard_normal(n_out).astype(np_dtype), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", [input_name, "w", "b"], [output_name], transB=1)],
        "linear",
        [helper.make_tensor_value_info(input_name, dtype, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, dtype, ["batch", n_out])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    if task is not None:
        helper.set_model_props(model, {"legoc.task": task})
    return model


def save_linear(path: Path, *args, **kwargs) -> Path:
    onnx.save(linear_model(*args, **kwargs), str(path))
    return path


def rows(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def external_block(folder: Path, location: str = "weights.bin") -> Path:
    """A linear block whose tensors live in `weights.bin`, then pointed at `location`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "block.onnx"
    onnx.save_model(
        linear_model(6, 4),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        path.write_bytes(model.SerializeToString())
    return path
