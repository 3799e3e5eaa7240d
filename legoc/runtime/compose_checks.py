"""What composition checks before building anything: IR versions, opsets, shapes, dtypes
and names, each mismatch reported with both sides named."""

from __future__ import annotations

from collections.abc import Sequence

from legoc.errors import LegocError
from legoc.runtime.block import Block, TensorInfo

DEFAULT_DOMAINS = ("", "ai.onnx")


def labels_of(blocks: Sequence[Block]) -> list[str]:
    """How messages name each block: its file, plus its position when files repeat."""
    labels = [b.label for b in blocks]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{label} (block {k + 1})" for k, label in enumerate(labels)]


def check_versions(blocks: Sequence[Block]) -> None:
    """Same IR version and the same opset per domain, or a message naming both sides."""
    labels = labels_of(blocks)
    first = blocks[0]
    for k, other in enumerate(blocks[1:], start=1):
        if other.model.ir_version != first.model.ir_version:
            raise LegocError(
                f"compose: {labels[0]} has IR version {first.model.ir_version} but "
                f"{labels[k]} has IR version {other.model.ir_version}; save both with the "
                "same onnx version"
            )
    seen: dict[str, tuple[int, str]] = {}
    for block, label in zip(blocks, labels):
        for entry in block.model.opset_import:
            domain = "ai.onnx" if entry.domain in DEFAULT_DOMAINS else entry.domain
            if domain in seen and seen[domain][0] != entry.version:
                version, owner = seen[domain]
                raise LegocError(
                    f"compose: {owner} imports opset {domain} {version} but "
                    f"{label} imports {domain} {entry.version}; convert one with "
                    f"onnx.version_converter.convert_version(model, {max(version, entry.version)})"
                )
            seen.setdefault(domain, (entry.version, label))


def compatible(a: TensorInfo, b: TensorInfo) -> bool:
    if a.dtype != b.dtype:
        return False
    if a.shape is None or b.shape is None:
        return True
    if len(a.shape) != len(b.shape):
        return False
    return all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape)
    )


def check_mapping(blocks: Sequence[Block], mapping: dict[str, str]) -> None:
    outs = {o for b in blocks[:-1] for o in b.output_names}
    ins = {i for b in blocks[1:] for i in b.input_names}
    for out, inp in mapping.items():
        if out not in outs:
            raise LegocError(
                f"compose sequential: --map {out}={inp}: no block but the last has an output "
                f"'{out}' (outputs: {sorted(outs)})"
            )
        if inp not in ins:
            raise LegocError(
                f"compose sequential: --map {out}={inp}: no block but the first has an input "
                f"'{inp}' (inputs: {sorted(ins)})"
            )


def check_concat(blocks: Sequence[Block]) -> None:
    labels = labels_of(blocks)
    first = blocks[0]
    for block, label in zip(blocks, labels):
        if len(block.outputs) != 1:
            raise LegocError(
                f"compose parallel --concat: {label} has {len(block.outputs)} outputs "
                f"{block.output_names}; concatenation needs exactly one per block"
            )
    a = first.outputs[0]
    for other, label in zip(blocks[1:], labels[1:]):
        b = other.outputs[0]
        lead_a = None if a.shape is None else a.shape[:-1]
        lead_b = None if b.shape is None else b.shape[:-1]
        same_lead = (
            lead_a is None
            or lead_b is None
            or (
                len(lead_a) == len(lead_b)
                and all(
                    not (isinstance(x, int) and isinstance(y, int)) or x == y
                    for x, y in zip(lead_a, lead_b)
                )
            )
        )
        if a.dtype != b.dtype or not same_lead:
            raise LegocError(
                f"compose parallel --concat: {labels[0]} output '{a.name}' is {a.describe()} "
                f"but {label} output '{b.name}' is {b.describe()}; concatenation needs "
                "the same dtype and the same dims except the last"
            )
