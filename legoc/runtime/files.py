"""Atomic writes and file hashes: a failed command never leaves a partial output file."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from legoc.errors import LegocError


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Inputs = Mapping[str, "str | Path | None"]  # what a command reads, by label: {"the model": path}


def check_output_file(final: Path, inputs: Inputs | None = None) -> Path:
    """Fail before any work when `final` could not be written, is not a regular file (a FIFO, a
    device: replacing it would clobber what is not ours) or is one of the command's `inputs`;
    returns its folder."""
    folder = final.parent if str(final.parent) else Path(".")
    _check_path(final, "output")
    if folder.exists() and not folder.is_dir():
        raise LegocError(f"output {final}: {folder} is a file, not a folder; pick another path")
    if not folder.is_dir():
        raise LegocError(f"output {final}: folder {folder} does not exist; create it first")
    if final.is_dir():
        raise LegocError(f"output {final}: is a folder; give a file name like block.onnx")
    check_replaceable(final)
    check_not_an_input(final, inputs)
    if not os.access(folder, os.W_OK):
        raise LegocError(f"output {final}: folder {folder} is not writable")
    return folder


def check_replaceable(final: Path) -> None:
    """Refuse to replace anything but a regular file (or a symlink to one): a FIFO or a device
    node (as root, `-o /dev/null` would otherwise replace the system's) is not ours to clobber."""
    if final.exists() and not final.is_file():
        raise LegocError(
            f"output {final}: is {_kind(final)}, not a regular file; legoc replaces only regular "
            "files: pick another path"
        )


def check_not_an_input(final: str | Path, inputs: Inputs | None) -> None:
    """Refuse an output that is the same file as one of the command's inputs (hard links and
    symlinks included): writing it would destroy what the command reads."""
    for label, source in (inputs or {}).items():
        if source is not None and same_file(final, source):
            raise LegocError(
                f"output {final}: is the same file as {label} ({source}); writing it would "
                "replace the input: pick another output path"
            )


def check_inputs_outside(folder: str | Path, inputs: Inputs | None) -> None:
    """Refuse to replace a folder that holds one of the command's inputs."""
    root = _resolved(folder)
    for label, source in (inputs or {}).items():
        target = _resolved(source) if source is not None else None
        if root is not None and target is not None and root in (target, *target.parents):
            raise LegocError(
                f"output {folder}: holds {label} ({source}); replacing the folder would delete "
                "the input: pick another output folder"
            )


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (the same inode, or the same resolved path)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except (OSError, ValueError):
        pass
    left, right = _resolved(a), _resolved(b)
    return left is not None and left == right


def _resolved(path: str | Path) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None


def _check_path(path: Path, what: str) -> None:
    """A NUL byte or a symlink loop, said in one line instead of a crash deep in a write."""
    if "\x00" in str(path):
        raise LegocError(f"{what} {str(path)!r}: contains a NUL byte; pick another path")
    if _resolved(path) is None:
        raise LegocError(f"{what} {path}: is a symlink loop; pick another path")


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def new_file_mode(final: Path) -> int:
    """The mode an output gets: a replaced file keeps its own, a new one follows the umask
    (what `open(path, "w")` would give; mkstemp alone makes it 0600)."""
    try:
        if final.is_file():
            return stat.S_IMODE(final.stat().st_mode)
    except OSError:
        pass
    return 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(final: str | Path, inputs: Inputs | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds.
    The file gets the mode of the file it replaces, or the umask's (`new_file_mode`)."""
    final = Path(final)
    folder = check_output_file(final, inputs)
    mode = new_file_mode(final)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise LegocError(f"output {final}: cannot write in {folder} ({exc.strerror})") from None
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
    except OSError as exc:  # a full disk, a quota, a folder gone read-only: the old file stays
        raise LegocError(
            f"output {final}: cannot write ({exc.strerror or exc}); the previous file, if any, "
            "is unchanged: free space or pick another folder"
        ) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(final: str | Path, text: str, inputs: Inputs | None = None) -> None:
    with atomic_file(final, inputs) as tmp:
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


def move_into(path: Path, folder: Path, inputs: Inputs | None = None) -> Path:
    """Move a finished file from a staging folder into `folder` (see `staging_folder`), refusing
    to replace a non-file or an input; the file gets the mode `new_file_mode` gives."""
    final = folder / path.name
    check_replaceable(final)
    check_not_an_input(final, inputs)
    os.chmod(path, new_file_mode(final))
    os.replace(path, final)
    return final


LOCK_SUFFIX = ".legoc-lock"


@contextmanager
def output_lock(final: str | Path) -> Iterator[Path | None]:
    """Hold an exclusive lock on `final` (a hidden lock file beside it, removed on exit) so two
    runs writing the same output cannot share or delete each other's checkpoint; a second run
    fails at once. Where there are no locks (Windows, some NFS mounts) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield None
        return
    final = Path(final)
    path = final.with_name(f".{final.name}{LOCK_SUFFIX}")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LegocError(
                f"output {final}: cannot create the lock file {path} ({exc.strerror or exc}); "
                "pick a writable output folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LegocError(
                    f"output {final}: another legoc run is writing it (it holds {path}); wait "
                    "for it to finish or pick another output path"
                ) from None
            held = False  # a file system without locks: run unlocked
        if not held:
            path.unlink(missing_ok=True)
            yield None
            return
        try:  # the holder before us may have removed the file we locked: lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # removed while still held: a waiter retries on the new one
        os.close(fd)
