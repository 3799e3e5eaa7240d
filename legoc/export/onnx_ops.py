"""ONNX forms of the aten ops the block exporter (TorchScript, opset 17) does not know.

`aten::rms_norm` (the RMS norms the frontend fuses, T5's and Llama's, and the norms
fold-ablations holds) has an ONNX op only from opset 23: here it is written out as
`x * 1/sqrt(mean(x², last dims) + eps) * weight`, what `F.rms_norm` computes (eps None: the
dtype's machine epsilon, as torch does).
"""

from __future__ import annotations

import torch
from torch.onnx import symbolic_helper

_REGISTERED: set[int] = set()
_DTYPES = {
    "Float": torch.float32,
    "Double": torch.float64,
    "Half": torch.float16,
    "BFloat16": torch.bfloat16,
}


def _rms_norm(g, x, normalized_shape, weight, eps):
    axes = list(range(-_count(normalized_shape), 0))
    scalar = x.type().scalarType() if x.type().scalarType() in _DTYPES else "Float"
    dtype = _DTYPES[scalar]
    none = symbolic_helper._is_none(eps)
    value = torch.finfo(dtype).eps if none else symbolic_helper._maybe_get_const(eps, "f")
    square = g.op("Mul", x, x)
    mean = g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
    shifted = g.op("Add", mean, g.op("Constant", value_t=torch.tensor(float(value), dtype=dtype)))
    y = g.op("Mul", x, g.op("Reciprocal", g.op("Sqrt", shifted)))
    if weight is not None and not symbolic_helper._is_none(weight):
        y = g.op("Mul", y, weight)
    return y


def _count(sizes) -> int:
    """How many trailing dims a normalized_shape names: a constant, or sizes read at run time
    (held norms read `x.shape[-1]`); only their number matters."""
    node = sizes.node()
    if node.kind() == "prim::ListConstruct":
        return len(list(node.inputs()))
    return len(symbolic_helper._get_const(sizes, "is", "normalized_shape"))


def register(opset: int) -> None:
    """Teach the TorchScript exporter the ops above at `opset` (once per process)."""
    if opset in _REGISTERED:
        return
    torch.onnx.register_custom_op_symbolic("aten::rms_norm", _rms_norm, opset)
    _REGISTERED.add(opset)
