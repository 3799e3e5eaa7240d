"""A building block at run time: its interface, its metadata and an onnxruntime session."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from legoc.errors import LegocError
from legoc.runtime.external import read_model

Dim = int | str | None  # static size, symbolic name (e.g. "batch"), or unknown


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, numpy dtype and shape (symbolic dims by name)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None  # None: rank unknown

    @classmethod
    def from_value_info(cls, value: onnx.ValueInfoProto) -> TensorInfo:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise LegocError(f"'{value.name}' is a {kind}, not a tensor; blocks take tensors")
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        if not tensor.HasField("shape"):
            return cls(value.name, dtype, None)
        dims: list[Dim] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return cls(value.name, dtype, tuple(dims))

    def describe(self) -> str:
        """`float32[batch,6]`: the form every message uses."""
        if self.shape is None:
            return f"{self.dtype}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def conform(self, array: Any, who: str) -> np.ndarray:
        """`array` as this input needs it; casts only within a kind (float64 -> float32, int32 ->
        int64), never int -> float (uint8 pixels fed as floats are a silent bug)."""
        array = np.asarray(array)
        if array.dtype != self.dtype:
            same_kind = array.dtype.kind == self.dtype.kind or {
                array.dtype.kind,
                self.dtype.kind,
            } == {"i", "u"}
            if not (same_kind and np.can_cast(array.dtype, self.dtype, casting="same_kind")):
                raise LegocError(
                    f"{who}: input '{self.name}' is {array.dtype} but the block expects "
                    f"{self.describe()}; convert the data to {self.dtype}"
                )
            array = array.astype(self.dtype)
        if self.shape is not None:
            fits = len(self.shape) == array.ndim and all(
                not isinstance(d, int) or d == n for d, n in zip(self.shape, array.shape)
            )
            if not fits:
                raise LegocError(
                    f"{who}: input '{self.name}' has shape {tuple(array.shape)} but the block "
                    f"expects {self.describe()}"
                )
        return np.ascontiguousarray(array)


class Block:
    """An ONNX block loaded safely; `block(x=...)` runs it and returns {output name: array}."""

    def __init__(self, model: onnx.ModelProto, path: Path | None = None, threads: int = 0):
        self.model = model
        self.path = path
        self.threads = threads
        initializers = {t.name for t in model.graph.initializer}
        label = str(path) if path else "block"
        try:
            self.inputs = [
                TensorInfo.from_value_info(v)
                for v in model.graph.input
                if v.name not in initializers
            ]
            self.outputs = [TensorInfo.from_value_info(v) for v in model.graph.output]
        except LegocError as exc:
            raise LegocError(f"block {label}: {exc}") from None
        self.metadata: dict[str, str] = {p.key: p.value for p in model.metadata_props}
        self._session: ort.InferenceSession | None = None

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> Block:
        """Read a block; external data is read only from files inside its own folder."""
        path = Path(path)
        return cls(read_model(path), path, threads)

    @property
    def label(self) -> str:
        return str(self.path) if self.path else self.metadata.get("legoc.task", "block")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def meta(self, key: str, default: Any = None) -> Any:
        """A metadata value, JSON-decoded when it is JSON."""
        if key not in self.metadata:
            return default
        value = self.metadata[key]
        try:
            return json.loads(value)
        except ValueError:
            return value

    def meta_dict(self, key: str) -> dict:
        """A metadata value that must be a JSON object ({} when absent); a malformed one is a
        one-line error naming the key."""
        if key not in self.metadata:
            return {}
        try:
            value = json.loads(self.metadata[key])
        except ValueError as exc:
            raise LegocError(
                f"block {self.label}: metadata '{key}' is not valid JSON ({exc}); re-export "
                "the block or remove that key"
            ) from None
        if not isinstance(value, dict):
            raise LegocError(
                f"block {self.label}: metadata '{key}' is a JSON {type(value).__name__}, not an "
                "object; re-export the block or remove that key"
            )
        return value

    @property
    def task(self) -> str | None:
        return self.metadata.get("legoc.task")

    def param_count(self) -> int:
        """Elements of the floating-point initializers the file stores: the *stored* count,
        which includes the zero channels that channel alignment pads in (not parameters)."""
        total = 0
        for tensor in self.model.graph.initializer:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            if np.issubdtype(dtype, np.floating):
                total += int(np.prod(tensor.dims, dtype=np.int64))
        return total

    def rationale_params(self) -> int:
        """The block's params: the rationale's own count (`legoc.rationale` params.block),
        without alignment zeros; for a composed block, the sum of its parts' params (recorded
        in `legoc.composition`); for a block without legoc metadata, its stored count."""
        params = self.meta_dict("legoc.rationale").get("params", {})
        block = params.get("block") if isinstance(params, dict) else None
        if isinstance(block, int):
            return block
        summed = self.meta_dict("legoc.composition").get("params")
        return summed if isinstance(summed, int) else self.param_count()

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            self._session = make_session(self.model.SerializeToString(), self.threads, self.label)
        return self._session

    def check_loads(self) -> None:
        """Refuse a block onnxruntime cannot load (unknown operators, weights of the wrong size)
        before a command writes anything that describes or copies it."""
        _ = self.session

    def feeds(self, arrays: Mapping[str, Any], who: str | None = None) -> dict[str, np.ndarray]:
        """Check and convert named arrays into this block's inputs (extra names are errors)."""
        who = who or self.label
        unknown = sorted(set(arrays) - set(self.input_names))
        missing = [t for t in self.inputs if t.name not in arrays]
        if missing:
            raise LegocError(
                f"{who}: missing input '{missing[0].name}' ({missing[0].describe()}); "
                f"the block takes {self.input_names}, got {sorted(arrays)}"
            )
        if unknown:
            raise LegocError(
                f"{who}: unknown input '{unknown[0]}'; the block takes {self.input_names}"
            )
        return {t.name: t.conform(arrays[t.name], who) for t in self.inputs}

    def __call__(self, **arrays: Any) -> dict[str, np.ndarray]:
        return self.run(arrays)

    def run(
        self, arrays: Mapping[str, Any], batch_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run on named inputs; with `batch_size`, in slices of the first axis."""
        feeds = self.feeds(arrays)
        rows = {a.shape[0] if a.ndim else None for a in feeds.values()}
        batched = all(t.shape and not isinstance(t.shape[0], int) for t in self.inputs)
        if batch_size is None or not batched or len(rows) != 1 or None in rows:
            return self._run_once(feeds)
        (n,) = rows
        parts = [
            self._run_once({k: v[start : start + batch_size] for k, v in feeds.items()})
            for start in range(0, max(n, 1), batch_size)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run_once(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime's errors name the failing node
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LegocError(f"{self.label}: onnxruntime failed: {first}") from None
        return dict(zip(self.output_names, values))


def malformed_metadata(block: Block, exc: Exception) -> LegocError:
    """The one-line error for legoc metadata whose JSON parses but does not have the shape
    legoc writes (a list where a mapping belongs, a string where a count belongs)."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    return LegocError(
        f"block {block.label}: its legoc.* metadata is malformed ({detail}); re-export the block "
        "or remove the malformed keys"
    )


def make_session(
    model: bytes | str, threads: int = 0, label: str = "block"
) -> ort.InferenceSession:
    """A CPU session; `threads` 0 lets onnxruntime choose. `model` is bytes or an .ort path."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # invalid graphs, unsupported ops
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LegocError(f"{label}: onnxruntime cannot load it: {first}") from None
