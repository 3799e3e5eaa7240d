"""Give back the pages of memory-mapped data once a batch has been read.

Data files are memory-mapped (`torch.load(mmap=True)`), so reading rows never copies the whole
file into memory; but every page read stays mapped into the process and counts toward its
resident memory until the kernel needs it back, so one pass over a 400 MB file would grow the
process by 400 MB. After copying a batch out, the batch's pages are dropped from the process
with `madvise(MADV_DONTNEED)`: they stay in the page cache (a later read is cheap), they just
stop counting against this process.

Only for tensors mapped read-only-in-practice from a file (copy-on-write, never written):
on anonymous memory MADV_DONTNEED would zero the data, so callers must know the tensor is a
file mapping (`Split.mapped`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from pathlib import Path

import torch

MADV_DONTNEED = 4  # Linux
PAGE = mmap.PAGESIZE

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):  # no libc madvise: pages are left to the kernel
        _libc = None


def mapped_from(tensors: list[torch.Tensor], path: Path) -> bool:
    """Whether every tensor's bytes lie in a mapping of the file `path` (Linux: read from
    /proc/self/maps; elsewhere False, and pages are left to the kernel)."""
    if _libc is None:
        return False
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return False
    target = str(Path(path).resolve())
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            low, high = (int(part, 16) for part in fields[0].split("-"))
            spans.append((low, high))
    for tensor in tensors:
        start = tensor.data_ptr()
        stop = start + tensor.numel() * tensor.element_size()
        if not tensor.is_contiguous() or not any(lo <= start and stop <= hi for lo, hi in spans):
            return False
    return True


def release_pages(tensor: torch.Tensor) -> None:
    """Drop the whole pages under `tensor`'s bytes from this process's resident set.

    Only the pages entirely inside the tensor's span are released (the range is rounded
    inwards), so memory next to it is never touched."""
    if _libc is None or tensor.numel() == 0 or not tensor.is_contiguous():
        return
    start = tensor.data_ptr()
    stop = start + tensor.numel() * tensor.element_size()
    first = -(-start // PAGE) * PAGE
    last = stop // PAGE * PAGE
    if last > first:
        _libc.madvise(first, last - first, MADV_DONTNEED)
