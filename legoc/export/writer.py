"""IR -> ONNX block (DESIGN §3.3): metadata, full checker, onnxruntime parity, atomic write."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.fx

from legoc.errors import LegocError, TaskNotMet
from legoc.export.lengths import checked_lengths, resized_split, search_length
from legoc.export.onnx_ops import register
from legoc.ir.core import IR
from legoc.ir.tokens import SEQUENCE, dynamic_tokens, other_length, sequence_of, with_length
from legoc.runtime.files import atomic_file
from legoc.task.spec import Split

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
OPSET = 17
OUTPUT_NAME = "logits"
TOKEN_AXIS = "tokens"


def output_token_axes(
    module: torch.nn.Module,
    input_names: list[str],
    example_inputs: dict[str, torch.Tensor],
    lengths: dict | None,
) -> list[int]:
    """Axes of the output that follow the token length (per-token logits): found by running
    the module at a second length."""
    tokens = dynamic_tokens(lengths)
    if not tokens:
        return []
    length = int(example_inputs[tokens[0]].shape[1])
    other = other_length(length, lengths)
    shapes = []
    with torch.no_grad():
        for n in (length, other):
            inputs = with_length(example_inputs, tokens, n)
            shapes.append(module(*[inputs[name] for name in input_names]).shape)
    return [axis for axis, (a, b) in enumerate(zip(*shapes)) if a != b]


def to_onnx_model(block: IR) -> onnx.ModelProto:
    """Export the block graph with named inputs, a dynamic batch axis (and token axis, where
    the capture left it dynamic) and output `logits`."""
    lengths = sequence_of(block.gm)
    return module_to_onnx(block.gm, block.input_names, block.example_inputs, lengths)


def keep_every_input(
    model: onnx.ModelProto,
    input_names: list[str],
    example_inputs: dict[str, torch.Tensor],
    tokens: list[str] | None = None,
) -> onnx.ModelProto:
    """Put back the inputs the exporter dropped because the block no longer reads them (an
    attention mask once every head is removed): a block takes every model input (§3.3)."""
    present = {i.name for i in model.graph.input}
    for position, name in enumerate(input_names):
        if name in present:
            continue
        example = example_inputs[name]
        elem = onnx.helper.np_dtype_to_tensor_dtype(example.numpy().dtype)
        shape = ["batch", *example.shape[1:]]
        if name in (tokens or []):  # a dynamic token axis, as on the inputs it kept
            shape[1] = TOKEN_AXIS
        info = onnx.helper.make_tensor_value_info(name, elem, shape)
        model.graph.input.insert(position, info)
    return model


def module_to_onnx(
    module: torch.nn.Module,
    input_names: list[str],
    example_inputs: dict[str, torch.Tensor],
    lengths: dict | None = None,
) -> onnx.ModelProto:
    """Any module (a block graph, a baseline network) in the block interface of DESIGN §3.3;
    `lengths` (`legoc.frontend.sequence`): the token inputs and their accepted range."""
    args = tuple(example_inputs[name] for name in input_names)
    dynamic = {name: {0: "batch"} for name in input_names}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    tokens = dynamic_tokens(lengths)
    for name in tokens:
        dynamic[name][1] = TOKEN_AXIS
    for axis in output_token_axes(module, input_names, example_inputs, lengths):
        dynamic[OUTPUT_NAME][axis] = TOKEN_AXIS
    module.eval()
    register(OPSET)  # aten ops opset 17 lacks (rms_norm), written out
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "block.onnx"
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=list(input_names),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
            )
            return keep_every_input(onnx.load(str(path)), input_names, example_inputs, tokens)
    except OSError as exc:  # the export goes through a temporary file: a full disk, a quota
        raise LegocError(
            f"export: cannot write the temporary ONNX file in {tempfile.gettempdir()} "
            f"({exc.strerror or exc}); nothing was written: free space there or point TMPDIR "
            "at a folder with room"
        ) from None


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str | dict]) -> None:
    del model.metadata_props[:]
    for key in sorted(metadata):
        value = metadata[key]
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def parity(
    session: ort.InferenceSession,
    reference: torch.nn.Module,
    split: Split,
    input_names: list[str],
    batch_size: int = 256,
) -> float:
    """Max |onnxruntime block - masked torch model| over the split (NaN in both: equal)."""
    worst = 0.0
    with torch.no_grad():
        for inputs, _, _ in split.batches(batch_size):
            expected = reference(*[inputs[n] for n in input_names]).numpy()
            feeds = {n: inputs[n].numpy() for n in input_names}
            (got,) = session.run([OUTPUT_NAME], feeds)
            both_nan = np.isnan(got) & np.isnan(expected)
            diff = np.where(both_nan, 0.0, np.abs(got - expected))
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst


def export_block(
    block: IR, reference: torch.nn.Module, split: Split, output: Path, metadata: dict
) -> float:
    """Write `output` atomically; raises if the checker or the parity check fails. A block
    with a dynamic token axis is checked at several lengths (`legoc.export.lengths`), which
    its metadata lists."""
    lengths = sequence_of(block.gm)
    others: list[Split] = []
    if lengths is not None:
        tokens = list(lengths["inputs"])
        own = search_length(split, tokens)
        checked = [own]
        if dynamic_tokens(lengths):
            checked = checked_lengths(own, lengths["min"], lengths["max"])
        others = [resized_split(split, tokens, n) for n in checked if n != own]
        metadata = {**metadata, SEQUENCE: {**lengths, "checked": checked}}
    return write_checked(
        to_onnx_model(block), reference, split, output, metadata, block.input_names, others
    )


def write_checked(
    model: onnx.ModelProto,
    reference: torch.nn.Module,
    split: Split,
    output: Path,
    metadata: dict,
    input_names: list[str],
    others: list[Split] | None = None,
) -> float:
    """Metadata, full checker, atomic write and onnxruntime parity with `reference` on `split`
    (and on `others`: the split at other token lengths); returns the parity's max abs
    difference."""
    set_metadata(model, metadata)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise TaskNotMet(f"export: the block fails onnx.checker: {exc}") from None
    with atomic_file(output) as tmp:
        onnx.save(model, str(tmp))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        worst = 0.0  # one session for every length: loading a 124M-param block takes seconds
        for part in [split, *(others or [])]:
            diff = parity(session, reference, part, input_names)
            if not diff <= PARITY_TOLERANCE:
                raise TaskNotMet(
                    f"export: onnxruntime and the torch reference differ by {diff:.3g} "
                    f"(> {PARITY_TOLERANCE}) on {part.name}; the block was not written"
                )
            worst = max(worst, diff)
    return worst
