"""Task data: reading a split's data file (.pt or .npz, memory-mapped where it can be), mapping
it onto the model's forward arguments, and reading it back in batches of bounded memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from legoc.errors import LegocError
from legoc.runtime.data import is_npz
from legoc.task.npz import map_npz
from legoc.task.paging import mapped_from, release_pages

SCAN_ROWS = 65536  # rows per chunk when a check reads a whole split


@dataclass
class Split:
    """One data split: the model's inputs by forward-argument name, labels, optional extras.

    `mapped`: the tensors are memory-mapped from the data file; reads then copy rows out and
    give the pages back (legoc.paging), so memory follows the batch size, not the file size.
    """

    name: str
    inputs: dict[str, torch.Tensor]
    y: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    mapped: bool = False

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        named = {f"input {k}": v for k, v in self.inputs.items()}
        if self.y is not None:
            named["y"] = self.y
        return {**named, **self.extras}

    def _read(self, tensor: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop): a view of in-memory data, or a copy of mapped data whose
        pages are then given back."""
        rows = tensor[start:stop]
        if not self.mapped:
            return rows
        copy = rows.clone()
        release_pages(rows)
        return copy

    def batches(self, batch_size: int, max_batch_size: int | None = None):
        """Yield (inputs, y, extras) slices; a memory-mapped file is read only batch by batch.

        With `max_batch_size`, batches start at `batch_size` rows and double up to it: an early
        verdict still comes after a small batch, while long passes pay less overhead per row.
        """
        n, start, size = len(self), 0, batch_size
        while start < n:
            stop = min(start + size, n)
            if max_batch_size is not None:
                size = min(size * 2, max_batch_size)
            inputs = {k: self._read(v, start, stop) for k, v in self.inputs.items()}
            y = None if self.y is None else self._read(self.y, start, stop)
            extras = {k: self._read(v, start, stop) for k, v in self.extras.items()}
            yield inputs, y, extras
            start = stop

    def take(self, rows: torch.Tensor) -> tuple[dict, torch.Tensor | None, dict]:
        """(inputs, y, extras) of the given row indices (random access, e.g. mask training)."""
        picked = []
        for group in (self.inputs, {"y": self.y} if self.y is not None else {}, self.extras):
            picked.append({k: v[rows] for k, v in group.items()})
        if self.mapped:
            for tensor in self._tensors().values():
                release_pages(tensor)
        inputs, labels, extras = picked
        return inputs, labels.get("y"), extras

    def scan(self, tensor: torch.Tensor, rows: int = SCAN_ROWS):
        """`tensor` in chunks of rows (for checks over a whole split in bounded memory)."""
        for start in range(0, tensor.shape[0], rows):
            yield self._read(tensor, start, min(start + rows, tensor.shape[0]))

    def value_range(self, tensor: torch.Tensor, ignore: int | None = None) -> tuple[int, int]:
        """(min, max) of an integer tensor of this split, read in chunks, without the values
        equal to `ignore` ((0, 0) when nothing else is left)."""
        chunks = []
        for chunk in self.scan(tensor):
            if ignore is not None:
                chunk = chunk[chunk != ignore]
            if chunk.numel():
                chunks.append((int(chunk.min()), int(chunk.max())))
        if not chunks:
            return 0, 0
        return min(lo for lo, _ in chunks), max(hi for _, hi in chunks)

    def all_finite(self, tensor: torch.Tensor) -> bool:
        """No NaN or infinity, checked chunk by chunk (a full-size mask would cost a byte per
        element)."""
        return all(bool(torch.isfinite(c).all()) for c in self.scan(tensor))


def _read_tensor_dict(path: Path, label: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The named tensors of a data file, and whether they are memory-mapped from it."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04" and is_npz(path):
        mapped = map_npz(path)  # uncompressed members: streamed like a .pt file
        if mapped is not None:
            tensors = {k: torch.from_numpy(v) for k, v in mapped.items()}
            return tensors, mapped_from(list(tensors.values()), path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {
                    k: torch.from_numpy(np.ascontiguousarray(archive[k])) for k in archive.files
                }
                return arrays, False
        except Exception as exc:  # object arrays, corrupt members, odd dtypes
            raise LegocError(
                f"{label}: {path} is not a readable .npz of numeric arrays ({exc}); save plain "
                "numeric arrays with np.savez"
            ) from None
    if head[:1] == b"{":
        raise LegocError(
            f"{label}: {path} is a text split (JSON lines): it is tokenized by the model "
            "folder's tokenizer, so give MODEL as a Hugging Face folder (config.json, "
            "*.safetensors and a tokenizer); elsewhere save token ids with torch.save"
        )
    try:
        mmap = head == b"PK\x03\x04"
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # any unreadable file is bad input
        raise LegocError(
            f"{label}: {path} is not a tensor file legoc can read safely "
            f"({exc.__class__.__name__}); save a dict of tensors with torch.save or np.savez"
        ) from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise LegocError(f"{label}: {path} must hold a dict of named tensors (inputs and 'y')")
    # pages may be given back only where they belong to the file (never anonymous memory)
    return obj, mmap and mapped_from(list(obj.values()), path)


def data_keys(path: Path, label: str) -> list[str]:
    """The tensor names a data file holds (for tools that have no model to name its inputs)."""
    tensors, _ = _read_tensor_dict(path, label)
    return list(tensors)


TOKEN_MASK = "attention_mask"  # the forward argument that marks real tokens (1) and padding (0)


def positions(
    tensors: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], position: str, label: str
) -> torch.Tensor | None:
    """The position each row's task reads (`position` in the spec), or None for all of them:
    `last`, each row's last real token (the attention mask's last 1; the last position without
    a mask); any other name, a per-row index tensor of the data file."""
    if position == "all":
        return None
    ids = next(iter(inputs.values()))
    if ids.dim() < 2:
        raise LegocError(f"position: {position} needs inputs with a token axis, got {ids.dim()}-d")
    rows, tokens = ids.shape[:2]
    if position == "last":
        mask = inputs.get(TOKEN_MASK)
        if mask is None:
            return torch.full((rows,), tokens - 1, dtype=torch.long)
        if mask.dim() != 2 or not bool((mask.sum(-1) > 0).all()):
            raise LegocError(f"position: last: {label}: every row's {TOKEN_MASK} needs a 1")
        return (mask.ne(0).long() * torch.arange(1, tokens + 1)).argmax(-1)
    at = tensors.get(position)
    if at is None:
        raise LegocError(
            f"position: {label} has no tensor {position!r} (one index per row); it has "
            f"{sorted(tensors)}; or use position: all | last"
        )
    if at.dtype.is_floating_point or at.dtype == torch.bool or tuple(at.shape) != (rows,):
        raise LegocError(
            f"position: {label}: {position!r} must be integer indices of shape ({rows},), one "
            f"per row, got {str(at.dtype).replace('torch.', '')} {tuple(at.shape)}"
        )
    if int(at.min()) < 0 or int(at.max()) >= tokens:
        raise LegocError(
            f"position: {label}: {position!r} ranges over [{int(at.min())}, {int(at.max())}] "
            f"but rows have {tokens} positions"
        )
    return at.long()


def load_split(
    name: str,
    path: Path,
    input_names: list[str],
    label: str,
    needs_labels: bool,
    position: str = "all",
    tensors: dict[str, torch.Tensor] | None = None,
) -> Split:
    """Read a split, map it onto the model's forward arguments and check it is usable;
    `position` (the spec's) adds `at`, the position each row's task reads, to its extras.
    `tensors`: the file's contents already read (a tokenized text split)."""
    mapped = False
    if tensors is None:
        tensors, mapped = _read_tensor_dict(path, label)
    inputs: dict[str, torch.Tensor] = {}
    for arg in input_names:
        if arg in tensors:
            inputs[arg] = tensors[arg]
        elif len(input_names) == 1 and "x" in tensors:
            inputs[arg] = tensors["x"]
        else:
            raise LegocError(
                f"{label}: {path} has no tensor '{arg}' (the model's forward argument); "
                f"it has {sorted(tensors)}"
            )
    y = tensors.get("y")
    if needs_labels and y is None:
        raise LegocError(f"{label}: {path} has no labels 'y'; the metric needs them")
    rows = {k: v.shape[0] if v.dim() else 0 for k, v in inputs.items()}
    if y is not None:
        rows["y"] = y.shape[0] if y.dim() else 0
    if len(set(rows.values())) != 1 or 0 in rows.values():
        raise LegocError(f"{label}: {path}: tensors must share a non-empty first dim, got {rows}")
    extras = {k: v for k, v in tensors.items() if k == "y_alt"}
    at = positions(tensors, inputs, position, label)
    if at is not None:
        extras["at"] = at
    split = Split(name=name, inputs=inputs, y=y, extras=extras, mapped=mapped)
    for key, tensor in [*inputs.items(), *([("y", y)] if y is not None else [])]:
        if tensor.is_floating_point() and not split.all_finite(tensor):
            raise LegocError(f"{label}: {path}: '{key}' contains NaN or infinite values")
    return split
