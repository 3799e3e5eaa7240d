"""Loading ONNX files safely: external-data tensors may only point inside the block's folder.

An ONNX file can keep tensors in side files named by a `location` string. A crafted block
could name `/etc/passwd` or `../../secrets` and have the loader read it into a tensor, so every
location is checked before onnx or onnxruntime opens any side file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx

from legoc.errors import LegocError


def read_model(path: str | Path) -> onnx.ModelProto:
    """Parse `path` without its external data, check every location, then load the data."""
    path = Path(path)
    if not path.is_file():
        raise LegocError(f"block {path}: file not found; pass the .onnx file of a block")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # any unparsable file is bad input
        raise LegocError(
            f"block {path}: not an ONNX model ({exc.__class__.__name__}); pass a .onnx file "
            "written by legoc extract or legoc compose"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise LegocError(f"block {path}: not an ONNX model (no graph); pass a .onnx block")
    external = list(external_tensors(model))
    if external:
        folder = path.resolve().parent
        for tensor in external:
            check_location(tensor, folder, path)
        try:
            onnx.load_external_data_for_model(model, str(folder))
        except Exception as exc:  # truncated side files and the like
            raise LegocError(
                f"block {path}: its external data cannot be read ({exc}); copy the block "
                "together with its data files"
            ) from None
    return model


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def check_location(tensor: onnx.TensorProto, folder: Path, path: Path) -> Path:
    """The side file of `tensor`, refusing absolute paths and anything outside `folder`."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    where = f"block {path}: tensor '{tensor.name}' keeps its data in"
    if not location:
        raise LegocError(f"{where} an external file with no location; re-save the block")
    if (
        PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
    ):
        raise LegocError(
            f"{where} '{location}', an absolute path; a block may only read data files in "
            "its own folder (re-save it with relative external data locations)"
        )
    try:
        target = (folder / location).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop; a NUL byte
        why = "a symlink loop" if not isinstance(exc, ValueError) else "not a valid path"
        raise LegocError(f"{where} {location!r}, which is {why}; re-save the block") from None
    if target != folder and folder not in target.parents:
        raise LegocError(
            f"{where} '{location}', outside the block's folder {folder}; a block may only read "
            "data files in its own folder"
        )
    if not target.is_file():
        raise LegocError(
            f"{where} '{location}', which does not exist in {folder}; copy the block "
            "together with its data files"
        )
    if not os.access(target, os.R_OK):
        raise LegocError(f"{where} '{location}', which is not readable")
    return target


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)
