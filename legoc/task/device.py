"""Where scoring, gradients, mask training and fine-tuning run: `--device` / `device:`.

`auto` picks CUDA when torch sees a GPU, else the CPU (MPS is used only when asked for: some of
its kernels still lack float64). A device that is asked for and absent, or a model that does not
fit in the device's free memory, is bad input: one line naming what is wrong (exit code 2).
"""

from __future__ import annotations

import os

import torch

from legoc.errors import LegocError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device `name` stands for (`auto`: cuda when available, else cpu)."""
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise LegocError(f"--device {name!r}: use one of {', '.join(DEVICES)}")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise LegocError(
            f"--device {name}: torch sees no CUDA device (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise LegocError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def free_bytes(device: torch.device) -> int | None:
    """Free memory on an accelerator (None on the CPU: the model is loaded there already)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    return None


def available_bytes(device: torch.device) -> int | None:
    """Memory free for working sets on `device`: the accelerator's free memory, or the host's
    available memory (Linux and other sysconf systems; None where it cannot be read)."""
    if device.type != "cpu":
        return free_bytes(device)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(model_bytes: int, working_bytes: int, device: torch.device, free: int | None):
    """One line when the model's weights plus the scoring working set exceed `free` bytes."""
    if free is None or model_bytes + working_bytes <= free:
        return
    raise LegocError(
        f"--device {device}: the model needs {_gib(model_bytes)} for its weights plus "
        f"{_gib(working_bytes)} for scoring batches, but {device} has {_gib(free)} free; use "
        "--device cpu or a larger device"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums over many rows (means, attributions); float32 where MPS lacks it."""
    return torch.float32 if device.type == "mps" else torch.float64
