"""Atomic writes and file hashes: a failed command never leaves a partial output file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from legoc.errors import LegocError


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_file(final: Path) -> Path:
    """Fail before any work when `final` could not be written; returns its folder."""
    folder = final.parent if str(final.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise LegocError(f"output {final}: {folder} is a file, not a folder; pick another path")
    if not folder.is_dir():
        raise LegocError(f"output {final}: folder {folder} does not exist; create it first")
    if final.is_dir():
        raise LegocError(f"output {final}: is a folder; give a file name like block.onnx")
    if not os.access(folder, os.W_OK):
        raise LegocError(f"output {final}: folder {folder} is not writable")
    return folder


@contextmanager
def atomic_file(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds."""
    final = Path(final)
    folder = check_output_file(final)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise LegocError(f"output {final}: cannot write in {folder} ({exc.strerror})") from None
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as exc:  # a full disk, a quota, a folder gone read-only: the old file stays
        raise LegocError(
            f"output {final}: cannot write ({exc.strerror or exc}); the previous file, if any, "
            "is unchanged: free space or pick another folder"
        ) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(final: str | Path, text: str) -> None:
    with atomic_file(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def staging_folder(final: Path) -> Iterator[Path]:
    """A scratch folder inside `final` (created if missing) removed afterwards; callers move
    finished files into `final` one by one with os.replace."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise LegocError(f"output {final}: is a file; give a folder (created if missing)")
    parent = final.parent if str(final.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise LegocError(f"output {final}: {parent} is a file, not a folder; pick another path")
    if not parent.is_dir():
        raise LegocError(f"output {final}: folder {parent} does not exist; create it first")
    created = not final.exists()
    try:
        final.mkdir(exist_ok=True)
        if not os.access(final, os.W_OK):
            raise PermissionError(13, "Permission denied")
        scratch = Path(tempfile.mkdtemp(prefix=".legoc-", dir=final))
    except OSError as exc:
        if created and final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        raise LegocError(
            f"output {final}: cannot write in {final if final.is_dir() else parent} "
            f"({exc.strerror or exc}); pick a writable folder"
        ) from None
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not any(final.iterdir()):
            final.rmdir()  # a failed run leaves no trace, not even the folder it made
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
