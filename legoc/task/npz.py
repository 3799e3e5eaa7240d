"""Memory-map the arrays of an uncompressed .npz instead of reading them whole.

`np.load` reads an .npz member completely into memory when it is accessed. `np.savez` stores
members uncompressed, so each array's bytes sit contiguous in the zip file after a small header:
mapping them directly makes .npz data as cheap to stream as a torch .pt file. Compressed members
(`np.savez_compressed`), Fortran-ordered or object arrays are not mapped (callers fall back to
`np.load`, which reads them whole, or refuses object arrays).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
LOCAL_SIGNATURE = b"PK\x03\x04"


def map_npz(path: Path) -> dict[str, np.ndarray] | None:
    """{name: copy-on-write memory map} of every member, or None when one cannot be mapped."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as handle:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                    return None
                handle.seek(info.header_offset)
                local = handle.read(LOCAL_HEADER)
                if len(local) < LOCAL_HEADER or local[:4] != LOCAL_SIGNATURE:
                    return None
                name_length, extra_length = struct.unpack("<HH", local[26:30])
                handle.seek(info.header_offset + LOCAL_HEADER + name_length + extra_length)
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    return None
                if fortran or dtype.hasobject or 0 in shape:
                    return None
                offset = handle.tell()
                if offset + int(np.prod(shape)) * dtype.itemsize > path.stat().st_size:
                    return None  # truncated: let np.load report it
                arrays[info.filename[: -len(".npy")]] = np.memmap(
                    path, dtype=dtype, mode="c", offset=offset, shape=shape
                )
    except (OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None
    return arrays
