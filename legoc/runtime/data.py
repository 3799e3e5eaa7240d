"""Arrays for blocks: .npz/.npy files with numpy alone; torch .pt files only when torch is
installed (imported on demand, for that file only: nothing else in legoc.runtime needs it)."""

from __future__ import annotations

import importlib
import importlib.util
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from legoc.errors import LegocError
from legoc.runtime.block import TensorInfo

LABEL_KEYS = ("y", "y_alt")  # labels in task data files; never fed to a block


def read_arrays(path: str | Path, label: str = "input") -> dict[str, np.ndarray]:
    """Named arrays from an .npz, a single-array .npy (named by its stem) or a torch file."""
    path = Path(path)
    if not path.is_file():
        raise LegocError(f"{label}: {path} not found")
    with path.open("rb") as handle:
        head = handle.read(6)
    if head == b"\x93NUMPY":
        try:
            return {path.stem: np.load(path, allow_pickle=False)}
        except Exception as exc:  # object arrays, corrupt headers
            raise LegocError(f"{label}: {path} is not a readable numeric .npy ({exc})") from None
    if head[:4] == b"PK\x03\x04" and is_npz(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except Exception as exc:
            raise LegocError(
                f"{label}: {path} is not a readable .npz of numeric arrays ({exc}); save plain "
                "numeric arrays with np.savez"
            ) from None
    return _read_torch_file(path, label)


def is_npz(path: Path) -> bool:
    """A zip of .npy members only (np.savez), as opposed to torch's zip format."""
    try:
        with zipfile.ZipFile(path) as archive:
            return all(name.endswith(".npy") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_torch_file(path: Path, label: str) -> dict[str, np.ndarray]:
    if importlib.util.find_spec("torch") is None:
        raise LegocError(
            f"{label}: {path} is not an .npz; reading torch files needs torch, which is not "
            "installed: save the arrays with np.savez instead"
        )
    torch = importlib.import_module("torch")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input
        raise LegocError(
            f"{label}: {path} is neither an .npz nor a tensor file legoc can read safely "
            f"({exc.__class__.__name__}); save the arrays with np.savez"
        ) from None
    if isinstance(obj, torch.Tensor):
        obj = {path.stem: obj}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise LegocError(f"{label}: {path} must hold a tensor or a dict of named tensors")
    return {k: v.detach().cpu().numpy() for k, v in obj.items()}


def inputs_for(
    input_names: list[str], arrays: dict[str, np.ndarray], label: str, source: str
) -> dict[str, np.ndarray]:
    """Pick a block's inputs out of named arrays: by name; a single-input block also takes `x`
    or the file's only non-label array (the task-data convention of DESIGN §3.2)."""
    picked = {}
    candidates = [k for k in arrays if k not in LABEL_KEYS]
    for name in input_names:
        if name in arrays:
            picked[name] = arrays[name]
        elif len(input_names) == 1 and "x" in arrays:
            picked[name] = arrays["x"]
        elif len(input_names) == 1 and len(candidates) == 1:
            picked[name] = arrays[candidates[0]]
        else:
            raise LegocError(
                f"{label}: {source} has no array '{name}' (the block's input); it has "
                f"{sorted(arrays)}"
            )
    return picked


def sample_inputs(inputs: Sequence[TensorInfo], rows: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs for a check: normal floats, zeros for integers and booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        if info.shape is None:
            raise LegocError(f"input '{info.name}' has no known shape; pass check data")
        shape = [
            d if isinstance(d, int) else (rows if i == 0 else 4) for i, d in enumerate(info.shape)
        ]
        if np.issubdtype(info.dtype, np.floating):
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
        else:
            feeds[info.name] = np.zeros(shape, dtype=info.dtype)
    return feeds
