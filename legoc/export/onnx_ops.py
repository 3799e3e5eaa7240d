"""ONNX forms of the aten ops the block exporter (TorchScript, opset 17) does not know.

`aten::rms_norm` (the RMS norms the frontend fuses, T5's and Llama's, and the norms
fold-ablations holds) has an ONNX op only from opset 23: here it is written out as
`x * 1/sqrt(mean(x², last dims) + eps) * weight`, what `F.rms_norm` computes (eps None: the
dtype's machine epsilon, as torch does).

`aten::diff` (transformers' packed-sequence check takes the difference of position ids, and it
survives into decoder blocks captured with a dynamic token axis) has no ONNX op at any opset:
it is `prepend ++ x ++ append` along `dim`, then `n` times `x[1:] - x[:-1]`. The same check
then takes `cumsum` of a bool tensor, which torch sums as int64 and ONNX `CumSum` refuses: the
exporter's own `cumsum` is kept, with bools (and an explicit dtype) cast first.
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


_END = 2**63 - 1  # Slice's "to the end"


def _diff(g, x, n, dim, prepend, append):
    times = symbolic_helper._get_const(n, "i", "n")
    axis = symbolic_helper._get_const(dim, "i", "dim")
    parts = [p for p in (prepend, x, append) if p is not None and not symbolic_helper._is_none(p)]
    y = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis_i=axis)
    for _ in range(times):
        later = symbolic_helper._slice_helper(g, y, axes=[axis], starts=[1], ends=[_END])
        earlier = symbolic_helper._slice_helper(g, y, axes=[axis], starts=[0], ends=[-1])
        y = g.op("Sub", later, earlier)
    return y


def _cumsum(g, x, dim, dtype=None):
    axis = g.op("Constant", value_t=torch.tensor(symbolic_helper._get_const(dim, "i", "dim")))
    if dtype is not None and not symbolic_helper._is_none(dtype):
        code = symbolic_helper._get_const(dtype, "i", "dtype")
        x = g.op("Cast", x, to_i=symbolic_helper._type_utils.JitScalarType(code).onnx_type())
    elif x.type().scalarType() == "Bool":
        x = g.op("Cast", x, to_i=symbolic_helper._type_utils.JitScalarType.INT64.onnx_type())
    return g.op("CumSum", x, axis)


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
    torch.onnx.register_custom_op_symbolic("aten::diff", _diff, opset)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", _cumsum, opset)
    _REGISTERED.add(opset)
