"""Multiply-accumulates per example of an ONNX block, counted from its graph (no torch).

Counts the ops that dominate cost — Gemm, MatMul, Conv (ConvTranspose as its transpose) —
after ONNX shape inference with the batch fixed to 1, so blocks from any source (extracted,
retrained, baseline) are measured the same way. Elementwise ops, pooling and normalisation
are not counted; the number is a MAC count, a FLOP count is about twice it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

MAC_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose")


def macs_per_example(model: onnx.ModelProto) -> int:
    """MACs of one example (batch 1); symbolic dims other than the first are taken as 1."""
    model = _with_batch_one(model)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _known_shapes(inferred)
    missing = {
        name
        for node in inferred.graph.node
        if node.op_type in MAC_OPS
        for name in (*node.input[:2], node.output[0])
        if name not in shapes
    }
    if missing:  # shapes computed at run time (e.g. reshapes fed by Shape): observe them
        shapes.update(_observed_shapes(model, sorted(missing)))
    total = 0
    for node in inferred.graph.node:
        if node.op_type in MAC_OPS:
            total += _node_macs(node, shapes)
    return int(total)


def _with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {t.name for t in copy.graph.initializer}
    for value in copy.graph.input:
        if value.name in initializers:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    del copy.graph.value_info[:]
    return copy


def _observed_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Run the batch-1 model once on zeros with `names` exposed as outputs; record shapes."""
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for name in names:
        if name not in outputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    feeds = {}
    initializers = {t.name for t in probe.graph.initializer}
    for value in probe.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        feeds[value.name] = np.zeros(dims, dtype=dtype)
    try:
        session = onnxruntime.InferenceSession(
            probe.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        values = session.run(names, feeds)
    except Exception:  # a probe that cannot run leaves those ops uncounted
        return {}
    return {name: tuple(int(d) for d in np.shape(v)) for name, v in zip(names, values)}


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = tuple(int(d.dim_value) for d in tensor.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    out = shapes.get(node.output[0])
    first = shapes.get(node.input[0])
    second = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if out is None or first is None or second is None:
        return 0  # unknown shapes: not counted rather than guessed
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        k = first[0] if trans_a else first[-1]
        return int(np.prod(out, dtype=np.int64)) * k
    if node.op_type == "MatMul":
        k = first[-1] if len(first) > 1 else first[0]
        return int(np.prod(out, dtype=np.int64)) * k
    if node.op_type == "Conv":  # weight: (out channels, in channels / groups, *kernel)
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(second[1:], dtype=np.int64))
    # ConvTranspose: each input position scatters into (out channels / groups) * kernel
    per_input = second[1] * int(np.prod(second[2:], dtype=np.int64))
    return int(np.prod(first, dtype=np.int64)) * per_input
