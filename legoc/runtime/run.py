"""`legoc run`: a block on an input file, outputs returned and optionally saved as .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legoc.errors import LegocError
from legoc.runtime.block import Block
from legoc.runtime.data import inputs_for, read_arrays
from legoc.runtime.files import atomic_file, check_output_file


def run_file(
    block_path: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    batch_size: int = 256,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(outputs, the input file's arrays); with `output`, the outputs are written as .npz."""
    if output is not None:
        output = Path(output)
        if output.suffix != ".npz":
            raise LegocError(f"-o {output}: outputs are written as .npz; name it OUT.npz")
        check_output_file(output, {"the block": block_path, "the input file": input_path})
    block = Block.load(block_path)
    arrays = read_arrays(input_path, "input")
    outputs = block.run(inputs_for(block.input_names, arrays, "input", str(input_path)), batch_size)
    if output is not None:
        with atomic_file(output) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **outputs)
    return outputs, arrays


def summarize(value: np.ndarray, y: np.ndarray | None = None) -> dict:
    """Type, min/mean/max and, for class scores with integer labels `y`, the accuracy."""
    info: dict = {"type": f"{value.dtype}[{','.join(str(d) for d in value.shape)}]"}
    numeric = value.size and np.issubdtype(value.dtype, np.number)
    for stat in ("min", "mean", "max"):
        info[stat] = float(getattr(value, stat)()) if numeric else None
    if y is not None and value.ndim >= 2 and y.shape == value.shape[:-1]:
        if np.issubdtype(y.dtype, np.integer):
            info["accuracy"] = float((value.argmax(-1) == y).mean())
    return info
